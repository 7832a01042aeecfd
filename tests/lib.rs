//! Cross-crate tests for factum; the tests live in `tests/`.

pub mod ledger {
    //! An aggregate whose events record the state they were decided on, so that a test can
    //! tell a decision on a stale state from one on the current state.

    use factum::prelude::*;
    use serde::{Deserialize, Serialize};

    /// An amount was recorded; `total_before` is the total the command was decided on.
    #[event]
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct Recorded {
        /// The amount.
        pub by: u64,
        /// The ledger's total when the command was decided.
        pub total_before: u64,
    }

    /// Records an amount.
    #[command]
    #[derive(Clone, Debug)]
    pub struct RecordV1 {
        /// The ledger.
        #[id]
        pub ledger: String,
        /// The amount.
        pub by: u64,
    }

    /// A running total.
    #[aggregate(category = "ledger")]
    #[derive(Debug, Default)]
    pub struct Ledger {
        /// The sum of all amounts.
        pub total: u64,
    }

    #[aggregate]
    impl Ledger {
        #[handle]
        fn record(&self, command: RecordV1) -> Result<Recorded, std::convert::Infallible> {
            Ok(Recorded {
                by: command.by,
                total_before: self.total,
            })
        }

        #[apply]
        fn recorded(&mut self, event: &Recorded) {
            self.total += event.by;
        }
    }
}
