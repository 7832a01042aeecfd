//! The generated code uses fully qualified paths only: it compiles with the prelude's names
//! shadowed, under `#![deny(warnings)]`.

#![deny(warnings)]
#![no_implicit_prelude]
#![allow(dead_code, non_camel_case_types, clippy::all)]

extern crate std;

use ::factum::{aggregate, command, event, process_manager, projection};

mod shadowing {
    pub(crate) struct Result;
    pub(crate) struct Ok;
    pub(crate) struct Err;
    pub(crate) struct Option;
    pub(crate) struct Some;
    pub(crate) struct None;
    pub(crate) struct Vec;
    pub(crate) struct String;
    pub(crate) struct Box;
    pub(crate) struct Clone;
    pub(crate) struct Debug;
    pub(crate) struct PartialEq;
    pub(crate) struct From;
    pub(crate) struct Into;
    pub(crate) struct Iterator;
    pub(crate) struct IntoIterator;
    pub(crate) struct AsRef;
    pub(crate) struct Default;
    pub(crate) struct Sized;
    pub(crate) struct Send;
    pub(crate) struct Sync;
    pub(crate) mod core {}
    pub(crate) mod std {}
    pub(crate) mod serde_json {}
    pub(crate) mod alloc {}
}

#[allow(unused_imports)]
use shadowing::*;

#[allow(non_upper_case_globals)]
const version: u32 = 7;
#[allow(non_upper_case_globals)]
const name: &str = "shadowed";
#[allow(non_upper_case_globals)]
const payload: u8 = 0;
#[allow(non_upper_case_globals)]
const event: u8 = 0;
#[allow(non_upper_case_globals)]
const command: u8 = 0;

#[event(name = "Opened", version = 2, previous = OpenedV1)]
#[derive(
    ::std::clone::Clone,
    ::std::fmt::Debug,
    ::std::cmp::PartialEq,
    ::serde::Serialize,
    ::serde::Deserialize,
)]
pub struct Opened {
    pub owner: ::std::string::String,
}

#[event(name = "Opened", version = 1, upcast_to = Opened)]
#[derive(::std::fmt::Debug, ::serde::Deserialize)]
pub struct OpenedV1 {}

impl ::std::convert::From<OpenedV1> for Opened {
    fn from(_: OpenedV1) -> Self {
        Self {
            owner: ::std::string::ToString::to_string("unknown"),
        }
    }
}

#[event(version = 2, upcast_json(from = 1, with = renamed))]
#[derive(
    ::std::clone::Clone,
    ::std::fmt::Debug,
    ::std::cmp::PartialEq,
    ::serde::Serialize,
    ::serde::Deserialize,
)]
pub struct Renamed {
    pub to: ::std::string::String,
}

fn renamed(
    value: ::factum::__private::serde_json::Value,
) -> ::std::result::Result<::factum::__private::serde_json::Value, ::std::string::String> {
    ::std::result::Result::Ok(value)
}

#[command(validate = check)]
#[derive(::std::clone::Clone, ::std::fmt::Debug)]
pub struct OpenV1 {
    #[id]
    pub id: ::std::string::String,
}

fn check(_: &OpenV1) -> ::std::result::Result<(), ::std::string::String> {
    ::std::result::Result::Ok(())
}

#[command]
#[derive(::std::clone::Clone, ::std::fmt::Debug)]
pub struct RenameV1 {
    pub to: ::std::string::String,
}

#[command]
#[derive(::std::clone::Clone, ::std::fmt::Debug)]
pub struct TouchV1;

#[command]
#[derive(::std::clone::Clone, ::std::fmt::Debug)]
pub struct CloseV1;

#[derive(::std::fmt::Debug, ::std::cmp::PartialEq)]
pub struct Refused;

impl ::std::fmt::Display for Refused {
    fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
        f.write_str("refused")
    }
}

impl ::std::error::Error for Refused {}

#[aggregate(category = "hygiene", snapshot_every = 10, state_version = 2)]
#[derive(::std::default::Default, ::std::fmt::Debug, ::serde::Serialize, ::serde::Deserialize)]
pub struct Thing {
    owner: ::std::string::String,
}

#[aggregate(error = Refused)]
impl Thing {
    /// Named like the trait's method: the inherent method is the one called.
    #[handle]
    fn handle(&self, cmd: OpenV1) -> ::std::result::Result<Opened, Refused> {
        ::std::result::Result::Ok(Opened { owner: cmd.id })
    }

    #[handle]
    fn rename(&self, cmd: RenameV1) -> ::std::result::Result<(Renamed, Opened), Refused> {
        ::std::result::Result::Ok((
            Renamed {
                to: ::std::clone::Clone::clone(&cmd.to),
            },
            Opened { owner: cmd.to },
        ))
    }

    #[handle]
    fn touch(&self, _: TouchV1) -> ::std::result::Result<::std::option::Option<Renamed>, Refused> {
        ::std::result::Result::Ok(::std::option::Option::None)
    }

    #[handle]
    fn close(&self, _: CloseV1) -> ::std::result::Result<::std::vec::Vec<ThingEvent>, Refused> {
        ::std::result::Result::Ok(::std::vec::Vec::new())
    }

    #[apply]
    fn apply(&mut self, e: &Opened) {
        ::std::clone::Clone::clone_from(&mut self.owner, &e.owner);
    }

    #[apply]
    fn renamed(&mut self, e: &Renamed) {
        ::std::clone::Clone::clone_from(&mut self.owner, &e.to);
    }
}

#[test]
fn generated_code_works_with_shadowed_names() {
    use ::factum::{Aggregate, EventSet};
    let thing = <Thing as ::std::default::Default>::default();
    let events = ::std::result::Result::unwrap(Aggregate::handle(
        &thing,
        <ThingCommand as ::std::convert::From<OpenV1>>::from(OpenV1 {
            id: ::std::string::ToString::to_string("x"),
        }),
    ));
    ::std::assert_eq!(events.len(), 1);
    ::std::assert_eq!(ThingEvent::EVENT_TYPES, ["Opened", "Renamed"]);
    ::std::assert_eq!(Thing::STATE_VERSION, 2);
}

#[test]
fn methods_named_like_the_trait_methods_are_dispatched() {
    use ::factum::Aggregate;
    let mut thing = <Thing as ::std::default::Default>::default();
    let opened = <ThingEvent as ::std::convert::From<Opened>>::from(Opened {
        owner: ::std::string::ToString::to_string("y"),
    });
    Aggregate::apply(&mut thing, &opened);
    ::std::assert_eq!(thing.owner, "y");
}

#[derive(::std::fmt::Debug, ::std::default::Default)]
pub struct Owners {
    seen: ::std::sync::Mutex<::std::vec::Vec<::std::string::String>>,
}

#[projection(name = "owners", categories = ["hygiene"])]
impl Owners {
    /// Named like the trait's method: the inherent method is the one called.
    async fn handle(&self, e: &Opened) -> ::std::result::Result<(), Refused> {
        let mut seen = ::std::result::Result::unwrap(self.seen.lock());
        seen.push(::std::clone::Clone::clone(&e.owner));
        ::std::result::Result::Ok(())
    }

    async fn name(&self, _: &Renamed, _: &::factum::RecordedEvent) {}

    #[reset]
    async fn reset(&self) {}
}

#[derive(
    ::std::clone::Clone,
    ::std::fmt::Debug,
    ::std::cmp::PartialEq,
    ::serde::Serialize,
    ::serde::Deserialize,
)]
pub enum Step {
    Rename(::std::string::String),
}

#[derive(::std::fmt::Debug, ::std::default::Default, ::serde::Serialize, ::serde::Deserialize)]
pub struct Steps {
    count: u32,
}

#[derive(::std::fmt::Debug)]
pub struct Renaming;

#[process_manager(name = "renaming")]
impl Renaming {
    #[start(by = owner, strict)]
    fn handle(&self, state: &mut Steps, e: &Opened) -> ::std::vec::Vec<Step> {
        state.count += 1;
        ::std::vec![Step::Rename(::std::clone::Clone::clone(&e.owner))]
    }

    #[stop(by = to)]
    fn route(
        &self,
        _: &mut Steps,
        _: &Renamed,
        _: &::factum::RecordedEvent,
    ) -> ::std::result::Result<::std::option::Option<Step>, Refused> {
        ::std::result::Result::Ok(::std::option::Option::None)
    }

    #[on_rejected]
    fn on_rejected(&self, _: &mut Steps, _: &Step, _: &::factum::Rejection) {}

    #[on_timeout]
    fn on_timeout(&self, _: &str, _: &mut Steps, _: &str) -> ::factum::Effects<Step> {
        ::factum::Effects::none()
    }
}

#[test]
fn projections_and_process_managers_work_with_shadowed_names() {
    use ::factum::{ProcessManager, Projection};
    ::std::assert_eq!(
        Projection::name(&<Owners as ::std::default::Default>::default()),
        "owners"
    );
    ::std::assert_eq!(
        Projection::event_types(&<Owners as ::std::default::Default>::default()),
        ["Opened", "Renamed"]
    );
    ::std::assert_eq!(ProcessManager::name(&Renaming), "renaming");
    ::std::assert_eq!(
        ProcessManager::event_types(&Renaming),
        ["Opened", "Renamed"]
    );
}
