//! Cross-crate tests for factum; the tests live in `tests/`.

pub mod fuzzing;

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

pub mod counters {
    //! Counters, read through a recorder installed for the test's thread
    //! (`metrics::set_default_local_recorder`), as `name{label=value,..}`.

    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use metrics::{
        Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    };

    /// Counter values by name and labels.
    pub type Values = Arc<Mutex<BTreeMap<String, u64>>>;

    /// A recorder of counters; gauges and histograms are dropped.
    #[derive(Debug, Default)]
    pub struct Capture(pub Values);

    struct Cell(Values, String);

    impl CounterFn for Cell {
        fn increment(&self, value: u64) {
            *self.0.lock().unwrap().entry(self.1.clone()).or_default() += value;
        }
        fn absolute(&self, value: u64) {
            self.0.lock().unwrap().insert(self.1.clone(), value);
        }
    }

    impl Recorder for Capture {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            Counter::from_arc(Arc::new(Cell(Arc::clone(&self.0), name)))
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }
}

pub mod fulfilment {
    //! One order's flow: `PlaceOrder` places it, the `fulfilment` process manager reserves
    //! its stock with `ReserveStock`, and the `order_list` projection shows its status.

    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use factum::Effects;
    use factum::prelude::*;
    use serde::{Deserialize, Serialize};

    #[event]
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct OrderPlaced {
        pub order_id: String,
        pub sku: String,
    }

    #[event]
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct StockReserved {
        pub order_id: String,
        pub sku: String,
    }

    #[command]
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct PlaceOrder {
        #[id]
        pub order_id: String,
        pub sku: String,
    }

    #[command]
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct ReserveStock {
        #[id]
        pub order_id: String,
        pub sku: String,
    }

    #[aggregate(category = "order")]
    #[derive(Debug, Default)]
    pub struct Order;

    #[aggregate]
    impl Order {
        #[handle]
        fn place(&self, c: PlaceOrder) -> Result<OrderPlaced, std::convert::Infallible> {
            Ok(OrderPlaced {
                order_id: c.order_id,
                sku: c.sku,
            })
        }

        #[apply]
        fn placed(&mut self, _: &OrderPlaced) {}
    }

    #[aggregate(category = "stock")]
    #[derive(Debug, Default)]
    pub struct Reservation;

    #[aggregate]
    impl Reservation {
        #[handle]
        fn reserve(&self, c: ReserveStock) -> Result<StockReserved, std::convert::Infallible> {
            Ok(StockReserved {
                order_id: c.order_id,
                sku: c.sku,
            })
        }

        #[apply]
        fn reserved(&mut self, _: &StockReserved) {}
    }

    #[derive(Debug, Default, Serialize, Deserialize)]
    pub struct FulfilmentState;

    #[derive(Debug)]
    pub struct Fulfilment;

    #[process_manager(name = "fulfilment")]
    impl Fulfilment {
        #[start(by = order_id)]
        fn placed(&self, _: &mut FulfilmentState, e: &OrderPlaced) -> Effects<ReserveStock> {
            Effects::none().command(ReserveStock {
                order_id: e.order_id.clone(),
                sku: e.sku.clone(),
            })
        }

        #[stop(by = order_id)]
        fn reserved(&self, _: &mut FulfilmentState, _: &StockReserved) {}
    }

    /// The status of each order.
    #[derive(Debug, Default)]
    pub struct OrderList {
        status: Mutex<BTreeMap<String, &'static str>>,
    }

    #[projection(name = "order_list")]
    impl OrderList {
        async fn placed(&self, e: &OrderPlaced) {
            self.status
                .lock()
                .unwrap()
                .insert(e.order_id.clone(), "placed");
        }

        async fn reserved(&self, e: &StockReserved) {
            self.status
                .lock()
                .unwrap()
                .insert(e.order_id.clone(), "reserved");
        }
    }

    /// An application of the order flow over `store` and `coordination`, polling every 10 ms.
    pub fn start<S: EventStore, C: factum::Coordination>(
        store: S,
        coordination: C,
        orders: std::sync::Arc<OrderList>,
    ) -> factum::Application<S, C> {
        let poll = std::time::Duration::from_millis(10);
        factum::Application::builder(store)
            .coordination(coordination)
            .aggregate::<Order>()
            .aggregate::<Reservation>()
            .projection(
                orders,
                factum::projection::ProjectionOptions::new().poll_interval(poll),
            )
            .process_manager(
                Fulfilment,
                factum::process::ProcessOptions::new().poll_interval(poll),
            )
            .start()
    }

    impl OrderList {
        /// The status of `order`: `placed` or `reserved`.
        pub fn status(&self, order: &str) -> Option<&'static str> {
            self.status.lock().unwrap().get(order).copied()
        }
    }
}
