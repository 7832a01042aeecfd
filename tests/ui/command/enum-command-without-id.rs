use factum::command;

#[command]
#[derive(Clone, Debug)]
pub struct AuditV1 {
    pub note: String,
}

#[command]
#[derive(Clone, Debug)]
pub enum Step {
    Audit(AuditV1),
}

fn main() {}
