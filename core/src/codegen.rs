//! Support for the code that `#[event]`, `#[command]`, `#[aggregate]`, `#[projection]` and
//! `#[process_manager]` generate.
//!
//! Reached through `factum::__private`; not a public API.

#![allow(
    missing_docs,
    reason = "support items for generated code, hidden from the docs"
)]

use std::fmt::Display;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use std::string::String;
pub use std::vec;
pub use std::vec::Vec;

use crate::aggregate::SnapshotPolicy;
use crate::error::{BoxError, DecodeError};
use crate::event::{Decoded, Payload, RecordedEvent};
use crate::process_manager::Effects;

/// One stored `(name, schema version)` pair.
pub type HistoryEntry = (&'static str, u32);

/// A JSON-level upcaster: turns the payload of one schema version into the next one's.
pub type JsonStep = fn(serde_json::Value) -> Result<serde_json::Value, String>;

/// Every `#[event]` type, current or old: its stored name and version, and how to read the
/// stored history that leads to it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an event type",
    label = "not declared with `#[event]`",
    note = "add `#[event]` to the declaration of `{Self}`"
)]
pub trait EventSchema: DeserializeOwned + Sized + 'static {
    /// The stored type name.
    const NAME: &'static str;
    /// The schema version.
    const VERSION: u32;
    /// Every `(name, version)` this type decodes, its own first, then older ones.
    const HISTORY: &'static [HistoryEntry];

    /// Decodes a stored payload of `(name, version)` into this type, upcasting older versions;
    /// `None` when `(name, version)` is not in this type's history.
    fn decode_history(
        name: &str,
        version: u32,
        payload: &Payload,
    ) -> Option<Result<Decoded<Self>, DecodeError>>;
}

/// An old event version that is read by upcasting it to `T` (`#[event(upcast_to = T)]`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is named as the `previous` version of `{T}` but does not upcast to it",
    label = "no `upcast_to = {T}` on this type",
    note = "add `upcast_to = {T}` to the `#[event]` attribute of `{Self}`"
)]
pub trait UpcastTo<T>: EventSchema {
    /// Turns this old event into one or several events of the next version.
    fn upcast(self) -> Decoded<T>;
}

/// `Self` names `P` as its previous version (`#[event(previous = P)]`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not name `{P}` as its `previous` version, so `{P}` would never be read",
    label = "`{P}` upcasts to this type",
    note = "add `previous = {P}` to the `#[event]` attribute of `{Self}`"
)]
pub trait Follows<P> {}

/// What an `upcast_with` function may return: one event, several, or a [`Decoded`].
pub trait IntoDecoded<T> {
    fn into_decoded(self) -> Decoded<T>;
}

impl<T> IntoDecoded<T> for T {
    fn into_decoded(self) -> Decoded<T> {
        Decoded::One(self)
    }
}

impl<T> IntoDecoded<T> for Vec<T> {
    fn into_decoded(self) -> Decoded<T> {
        Decoded::Many(self)
    }
}

impl<T> IntoDecoded<T> for Decoded<T> {
    fn into_decoded(self) -> Decoded<T> {
        self
    }
}

/// Deserializes a payload stored at `(name, version)` into `T`.
pub fn decode_payload<T: DeserializeOwned>(
    name: &str,
    version: u32,
    payload: &Payload,
) -> Result<Decoded<T>, DecodeError> {
    payload
        .decode()
        .map(Decoded::One)
        .map_err(|source| DecodeError::payload(name, version, source))
}

/// Upcasts what the previous version decoded into the next version.
pub fn upcast<P: UpcastTo<T>, T>(
    decoded: Option<Result<Decoded<P>, DecodeError>>,
) -> Option<Result<Decoded<T>, DecodeError>> {
    Some(decoded?.map(|decoded| match decoded {
        Decoded::One(old) => old.upcast(),
        Decoded::Many(olds) => {
            let mut out = Vec::with_capacity(olds.len());
            for old in olds {
                out.extend(old.upcast());
            }
            Decoded::Many(out)
        }
    }))
}

/// Adapts a JSON upcaster's error to a message.
pub fn json_result<E: Display>(
    result: Result<serde_json::Value, E>,
) -> Result<serde_json::Value, String> {
    result.map_err(|e| e.to_string())
}

/// Reads a payload stored at `version` through JSON upcasters into `T`, whose version is
/// `current`; `steps[i]` turns version `first + i` into `first + i + 1`, and the last step
/// reaches `current`. `None` when `version` is not in `first..current`.
pub fn decode_json<T: DeserializeOwned>(
    name: &str,
    version: u32,
    first: u32,
    steps: &[JsonStep],
    payload: &Payload,
) -> Option<Result<Decoded<T>, DecodeError>> {
    let skip = usize::try_from(version.checked_sub(first)?).ok()?;
    if skip >= steps.len() {
        return None;
    }
    Some(run_json_steps(name, version, &steps[skip..], payload))
}

fn run_json_steps<T: DeserializeOwned>(
    name: &str,
    version: u32,
    steps: &[JsonStep],
    payload: &Payload,
) -> Result<Decoded<T>, DecodeError> {
    let mut value = payload
        .to_value()
        .map_err(|source| DecodeError::payload(name, version, source))?;
    for (at, step) in (version..).zip(steps) {
        value = step(value).map_err(|message| DecodeError::Upcast {
            event_type: name.to_owned(),
            version: at,
            message,
        })?;
    }
    serde_json::from_value(value)
        .map(Decoded::One)
        .map_err(|source| DecodeError::payload(name, version, source))
}

/// `Event::decode_stored` of an `#[event]` type.
pub fn decode_stored<T: EventSchema>(
    version: u32,
    payload: &Payload,
) -> Result<Decoded<T>, DecodeError> {
    T::decode_history(T::NAME, version, payload).unwrap_or_else(|| {
        Err(DecodeError::UnknownVersion {
            event_type: T::NAME.to_owned(),
            version,
        })
    })
}

/// The error for a stored event that no type of a set decodes.
pub fn unknown_event(known: &[&str], event_type: &str, version: u32) -> DecodeError {
    if known.contains(&event_type) {
        DecodeError::UnknownVersion {
            event_type: event_type.to_owned(),
            version,
        }
    } else {
        DecodeError::UnknownType {
            event_type: event_type.to_owned(),
        }
    }
}

/// Whether two strings are equal, in a constant.
pub const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Whether `previous` may precede `next` in an upcast chain: a lower version, and exactly one
/// lower under the same name (no gap).
pub const fn follows(previous: HistoryEntry, next: HistoryEntry) -> bool {
    if str_eq(previous.0, next.0) {
        previous.1.checked_add(1).is_some() && previous.1 + 1 == next.1
    } else {
        previous.1 < next.1
    }
}

/// The history of a type: its own entry, its JSON-upcast versions (`json`, newest first),
/// then its predecessor's history.
pub const fn history<const N: usize>(
    own: HistoryEntry,
    json: &[u32],
    previous: &'static [HistoryEntry],
) -> [HistoryEntry; N] {
    let mut out = [own; N];
    let mut i = 0;
    while i < json.len() {
        out[1 + i] = (own.0, json[i]);
        i += 1;
    }
    let mut j = 0;
    while j < previous.len() {
        out[1 + json.len() + j] = previous[j];
        j += 1;
    }
    out
}

/// Whether no `(name, version)` appears twice across the histories of a set.
pub const fn distinct_entries(histories: &[&[HistoryEntry]]) -> bool {
    let mut h = 0;
    while h < histories.len() {
        let mut i = 0;
        while i < histories[h].len() {
            let (name, version) = histories[h][i];
            let mut k = h;
            let mut j = i + 1;
            loop {
                while j < histories[k].len() {
                    let (n, v) = histories[k][j];
                    if v == version && str_eq(n, name) {
                        return false;
                    }
                    j += 1;
                }
                k += 1;
                if k >= histories.len() {
                    break;
                }
                j = 0;
            }
            i += 1;
        }
        h += 1;
    }
    true
}

const fn seen_before(histories: &[&[HistoryEntry]], h: usize, i: usize) -> bool {
    let name = histories[h][i].0;
    let mut k = 0;
    while k <= h {
        let end = if k == h { i } else { histories[k].len() };
        let mut j = 0;
        while j < end {
            if str_eq(histories[k][j].0, name) {
                return true;
            }
            j += 1;
        }
        k += 1;
    }
    false
}

/// How many distinct names the histories hold.
pub const fn distinct_names_len(histories: &[&[HistoryEntry]]) -> usize {
    let mut count = 0;
    let mut h = 0;
    while h < histories.len() {
        let mut i = 0;
        while i < histories[h].len() {
            if !seen_before(histories, h, i) {
                count += 1;
            }
            i += 1;
        }
        h += 1;
    }
    count
}

/// The distinct names the histories hold, in order of first appearance.
pub const fn distinct_names<const N: usize>(
    histories: &[&'static [HistoryEntry]],
) -> [&'static str; N] {
    let mut out = [""; N];
    let mut count = 0;
    let mut h = 0;
    while h < histories.len() {
        let mut i = 0;
        while i < histories[h].len() {
            if !seen_before(histories, h, i) && count < N {
                out[count] = histories[h][i].0;
                count += 1;
            }
            i += 1;
        }
        h += 1;
    }
    out
}

/// Every command type of an aggregate is cloned when a command is decided again after losing
/// an append race.
#[diagnostic::on_unimplemented(
    message = "command `{Self}` must implement `Clone`",
    label = "handled here, so the generated command enum clones it",
    note = "a command that lost an append race is decided again on the new state, so commands are `Clone`: add `#[derive(Clone)]` to `{Self}`"
)]
pub trait CommandClone {
    fn clone_command(&self) -> Self;
}

impl<T: Clone> CommandClone for T {
    fn clone_command(&self) -> Self {
        self.clone()
    }
}

/// A snapshotted state is stored as JSON.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has `snapshot_every` but does not implement `Serialize` and `Deserialize`",
    label = "snapshots store this state as JSON",
    note = "add `#[derive(Serialize, Deserialize)]` to `{Self}`, or remove `snapshot_every`"
)]
pub trait SnapshotState: Serialize + DeserializeOwned {}

impl<T: Serialize + DeserializeOwned> SnapshotState for T {}

/// How a snapshotted state is stored.
#[derive(Debug)]
pub struct StateCodec<T> {
    pub encode: fn(&T) -> Result<Payload, serde_json::Error>,
    pub decode: fn(&Payload) -> Result<T, serde_json::Error>,
}

/// The JSON codec of a snapshotted state.
pub const fn state_codec<T: SnapshotState>() -> StateCodec<T> {
    StateCodec {
        encode: Payload::encode::<T>,
        decode: Payload::decode::<T>,
    }
}

/// What `#[aggregate(...)]` on the state struct declares; the `Aggregate` impl generated from
/// the `#[aggregate] impl` block reads it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no `#[aggregate(category = \"...\")]` attribute",
    label = "`#[aggregate]` on this impl block needs the attribute on the struct too",
    note = "add `#[aggregate(category = \"...\")]` to the declaration of `{Self}`"
)]
pub trait AggregateConfig: Sized {
    const CATEGORY: &'static str;
    const STATE_VERSION: u32;
    const SNAPSHOT: SnapshotPolicy;
    /// `Some` when the state is snapshotted.
    const STATE_CODEC: Option<StateCodec<Self>>;

    fn encode_state(&self) -> Option<Result<Payload, serde_json::Error>> {
        Self::STATE_CODEC.map(|codec| (codec.encode)(self))
    }

    fn decode_state(state: &Payload) -> Option<Result<Self, serde_json::Error>> {
        Self::STATE_CODEC.map(|codec| (codec.decode)(state))
    }
}

/// A stored event that a `#[projection]` or `#[process_manager]` handles but cannot decode.
#[derive(Debug)]
pub struct HandlerDecodeError {
    /// The projection or process manager.
    pub handler: String,
    pub event_type: String,
    pub version: u32,
    pub stream: String,
    pub position: u64,
    pub source: DecodeError,
}

impl Display for HandlerDecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` cannot decode `{}` version {} at position {} of stream `{}`: {}",
            self.handler, self.event_type, self.version, self.position, self.stream, self.source
        )
    }
}

impl std::error::Error for HandlerDecodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// The error of a handled event that does not decode, naming its type, version, stream and
/// position.
pub fn decode_failed(handler: &str, event: &RecordedEvent, source: DecodeError) -> BoxError {
    Box::new(HandlerDecodeError {
        handler: handler.to_owned(),
        event_type: event.event_type.clone(),
        version: event.schema_version,
        stream: event.stream_id.to_string(),
        position: event.position,
        source,
    })
}

/// What a `#[projection]` does with a stored event whose name one of its types reads, at a
/// version that none of them reads (written by a newer deployment, say).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnknownVersions {
    /// An error naming the event, handled by the failure policy (the default).
    Fail,
    /// Skipped with a warning, counted in `factum_projection_skipped_unknown_versions_total`
    /// (`#[projection(skip_unknown_versions)]`).
    Skip,
}

/// The end of a `#[projection]`'s dispatch, reached when no handled type decoded `event`.
///
/// A name that none of the `histories` holds is not subscribed to (the runtime never delivers
/// it), so it is ignored. A name they hold at another version is a version this build does
/// not know: an error naming type, version, stream and position, so that the failure policy
/// retries, parks or stops and the checkpoint never passes it silently; or, with
/// [`UnknownVersions::Skip`], a warning and a count.
pub fn unhandled_event(
    projection: &str,
    histories: &[&[HistoryEntry]],
    event: &RecordedEvent,
    unknown_versions: UnknownVersions,
) -> Result<(), BoxError> {
    let handled = histories
        .iter()
        .flat_map(|h| h.iter())
        .any(|(name, _)| *name == event.event_type);
    if !handled {
        return Ok(());
    }
    match unknown_versions {
        UnknownVersions::Fail => Err(decode_failed(
            projection,
            event,
            DecodeError::UnknownVersion {
                event_type: event.event_type.clone(),
                version: event.schema_version,
            },
        )),
        UnknownVersions::Skip => {
            tracing::warn!(
                projection,
                event_type = %event.event_type,
                version = event.schema_version,
                stream = %event.stream_id,
                position = event.position,
                "skipping an event of an unknown version (`skip_unknown_versions`)"
            );
            #[cfg(feature = "metrics")]
            metrics::counter!(
                "factum_projection_skipped_unknown_versions_total",
                "projection" => projection.to_owned(),
                "event_type" => event.event_type.clone(),
            )
            .increment(1);
            Ok(())
        }
    }
}

/// The end of a `#[process_manager]`'s routing, reached when no handled type decoded
/// `event`: a name it does not handle is ignored, a handled name at a version none of its
/// types reads is an error (which stops the process manager at the event, as an event that
/// does not decode does), never skipped.
pub fn unhandled_route(
    process: &str,
    histories: &[&[HistoryEntry]],
    event: &RecordedEvent,
) -> Result<crate::process_manager::Route, BoxError> {
    unhandled_event(process, histories, event, UnknownVersions::Fail)
        .map(|()| crate::process_manager::Route::Ignore)
}

/// The error type of a `#[projection]` or `#[process_manager]` handler.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the error of a handler",
    label = "returned here",
    note = "a handler's error converts into `factum::BoxError`: implement `std::error::Error + Send + Sync + 'static` for `{Self}` (e.g. with `thiserror`), or return a `String`"
)]
pub trait HandlerError {
    fn into_box_error(self) -> BoxError;
}

impl<E: Into<BoxError>> HandlerError for E {
    fn into_box_error(self) -> BoxError {
        self.into()
    }
}

/// The error a handler returned, boxed.
pub fn handler_error<E: HandlerError>(error: E) -> BoxError {
    error.into_box_error()
}

/// Every stored name in `histories`, each once, in order of first appearance: the event types
/// a projection or process manager subscribes to, old versions' names included.
pub fn event_type_names(histories: &[&[HistoryEntry]]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for (name, _) in histories.iter().flat_map(|h| h.iter()) {
        if !names.iter().any(|n| n == name) {
            names.push((*name).to_owned());
        }
    }
    names
}

/// The type of a field named by `by = field` in a `#[process_manager]` routing attribute.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a correlation key",
    label = "routed by this field",
    note = "route by a field of type `String`, `&str`, `Box<str>`, `Arc<str>`, `Cow<str>` or `Uuid`"
)]
pub trait CorrelationKey {
    fn correlation_key(&self) -> String;
}

impl CorrelationKey for str {
    fn correlation_key(&self) -> String {
        self.to_owned()
    }
}

impl CorrelationKey for String {
    fn correlation_key(&self) -> String {
        self.clone()
    }
}

impl CorrelationKey for Box<str> {
    fn correlation_key(&self) -> String {
        (**self).to_owned()
    }
}

impl CorrelationKey for std::sync::Arc<str> {
    fn correlation_key(&self) -> String {
        (**self).to_owned()
    }
}

impl CorrelationKey for std::borrow::Cow<'_, str> {
    fn correlation_key(&self) -> String {
        (**self).to_owned()
    }
}

impl CorrelationKey for uuid::Uuid {
    fn correlation_key(&self) -> String {
        self.to_string()
    }
}

impl<T: CorrelationKey + ?Sized> CorrelationKey for &T {
    fn correlation_key(&self) -> String {
        (**self).correlation_key()
    }
}

/// A command type a `#[process_manager]` handler returns, converted into the process
/// manager's command type.
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not convert into the command type `{C}`",
    label = "returned here",
    note = "implement `From<{Self}>` for `{C}`, or return `{C}`"
)]
pub trait IntoCommand<C> {
    fn into_command(self) -> C;
}

impl<X, C: From<X>> IntoCommand<C> for X {
    fn into_command(self) -> C {
        C::from(self)
    }
}

/// Effects whose commands convert into the process manager's command type.
pub fn effects_from<X: IntoCommand<C>, C>(effects: Effects<X>) -> Effects<C> {
    Effects {
        commands: effects
            .commands
            .into_iter()
            .map(IntoCommand::into_command)
            .collect(),
        schedule: effects.schedule,
        cancel: effects.cancel,
        complete: effects.complete,
    }
}

/// Commands, in order.
pub fn effects_from_vec<X: IntoCommand<C>, C>(commands: Vec<X>) -> Effects<C> {
    Effects::from(
        commands
            .into_iter()
            .map(IntoCommand::into_command)
            .collect::<Vec<C>>(),
    )
}

/// Zero or one command.
pub fn effects_from_option<X: IntoCommand<C>, C>(command: Option<X>) -> Effects<C> {
    Effects::from(
        command
            .into_iter()
            .map(IntoCommand::into_command)
            .collect::<Vec<C>>(),
    )
}

/// One command.
pub fn effects_from_one<X: IntoCommand<C>, C>(command: X) -> Effects<C> {
    Effects::none().command(command.into_command())
}

/// Adds the effects of one handler call to those of the earlier calls for the same stored
/// event (an upcast split into several events).
pub fn merge_effects<C>(into: &mut Effects<C>, more: Effects<C>) {
    into.commands.extend(more.commands);
    into.schedule.extend(more.schedule);
    into.cancel.extend(more.cancel);
    into.complete |= more.complete;
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &[HistoryEntry] = &[("A", 2), ("A", 1)];
    const B: &[HistoryEntry] = &[("B", 1), ("A0", 1)];

    #[test]
    fn chain_rules() {
        assert!(follows(("A", 1), ("A", 2)));
        assert!(!follows(("A", 1), ("A", 3)));
        assert!(!follows(("A", 2), ("A", 2)));
        assert!(follows(("Old", 1), ("New", 3)));
        assert!(!follows(("Old", 3), ("New", 3)));
        assert!(!follows(("A", u32::MAX), ("A", 1)));
    }

    #[test]
    fn names_and_duplicates() {
        const LEN: usize = distinct_names_len(&[A, B]);
        const NAMES: [&str; LEN] = distinct_names(&[A, B]);
        assert_eq!(NAMES, ["A", "B", "A0"]);
        assert!(distinct_entries(&[A, B]));
        assert!(!distinct_entries(&[A, &[("B", 1), ("A", 1)]]));
        assert!(!distinct_entries(&[&[("A", 1), ("A", 1)]]));
        const H: [HistoryEntry; 4] = history(("C", 3), &[2, 1], &[("Z", 0)]);
        assert_eq!(H, [("C", 3), ("C", 2), ("C", 1), ("Z", 0)]);
    }

    #[test]
    fn subscribed_names_are_distinct_in_order() {
        assert_eq!(
            event_type_names(&[A, B, &[("C", 1), ("B", 1)]]),
            ["A", "B", "A0", "C"]
        );
        assert!(event_type_names(&[]).is_empty());
    }

    #[test]
    fn correlation_keys() {
        assert_eq!("o-1".correlation_key(), "o-1");
        assert_eq!(String::from("o-2").correlation_key(), "o-2");
        assert_eq!((&&String::from("o-3")).correlation_key(), "o-3");
        assert_eq!(std::sync::Arc::<str>::from("o-4").correlation_key(), "o-4");
        let id = uuid::Uuid::nil();
        assert_eq!(id.correlation_key(), id.to_string());
    }

    #[derive(Debug, PartialEq)]
    struct Ship(u8);

    #[derive(Debug, PartialEq)]
    enum Cmd {
        Ship(u8),
    }

    impl From<Ship> for Cmd {
        fn from(s: Ship) -> Self {
            Cmd::Ship(s.0)
        }
    }

    #[test]
    fn effects_convert_and_merge() {
        let mut all: Effects<Cmd> = effects_from_vec(vec![Ship(1), Ship(2)]);
        merge_effects(&mut all, effects_from_option(Some(Ship(3))));
        merge_effects(&mut all, effects_from_option::<Ship, Cmd>(None));
        merge_effects(
            &mut all,
            effects_from(
                Effects::<Ship>::none()
                    .command(Ship(4))
                    .cancel("t")
                    .complete(),
            ),
        );
        merge_effects(&mut all, effects_from_one(Ship(5)));
        assert_eq!(
            all.commands,
            [
                Cmd::Ship(1),
                Cmd::Ship(2),
                Cmd::Ship(3),
                Cmd::Ship(4),
                Cmd::Ship(5)
            ]
        );
        assert_eq!(all.cancel, ["t"]);
        assert!(all.complete);
    }

    #[test]
    fn unknown_names_and_versions() {
        assert!(matches!(
            unknown_event(&["A"], "A", 9),
            DecodeError::UnknownVersion { version: 9, .. }
        ));
        assert!(matches!(
            unknown_event(&["A"], "B", 1),
            DecodeError::UnknownType { .. }
        ));
    }
}
