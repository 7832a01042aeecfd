use factum::{aggregate, command, event, MemoryStore, Metadata, Repository};
use serde::{Deserialize, Serialize};

#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Noted {
    pub note: String,
}

#[command]
#[derive(Clone, Debug)]
pub struct NoteV1 {
    pub note: String,
}

#[aggregate(category = "ledger")]
#[derive(Default)]
pub struct Ledger;

#[aggregate]
impl Ledger {
    #[handle]
    fn note(&self, c: NoteV1) -> Result<Noted, std::convert::Infallible> {
        Ok(Noted { note: c.note })
    }

    #[apply]
    fn noted(&mut self, _: &Noted) {}
}

async fn run() {
    let ledgers = Repository::<Ledger, _>::new(MemoryStore::new());
    let _ = ledgers.execute(NoteV1 { note: "x".into() }, Metadata::new()).await;
}

fn main() {
    let _ = run();
}
