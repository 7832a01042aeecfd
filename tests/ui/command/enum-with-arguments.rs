use factum::command;

#[command]
#[derive(Clone, Debug)]
pub struct ReserveV1 {
    #[id]
    pub sku: String,
}

#[command(name = "Steps")]
#[derive(Clone, Debug)]
pub enum Step {
    Reserve(ReserveV1),
}

fn main() {}
