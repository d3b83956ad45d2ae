//! The four plugin worlds as types: for each slot, its generated bindings,
//! its input and its output, and how to instantiate and call it. The host
//! has one call path over these ([`WasmHost::call`](super::wasm::WasmHost::call)),
//! and a version linked for a world ([`Linked<W>`](super::wasm::Linked)) can
//! only be called with that world's input.
//!
//! Every input has one canonical encoding ([`Canonical`]) from which the
//! call's random seed is derived: records are taken apart field by field
//! with exhaustive patterns, so a field added to the WIT is a compile error
//! here until it is encoded, and "same input, same output" keeps holding.

use wasmtime::component::InstancePre;
use wasmtime::Store;

use super::wasi::Seed;
use super::wasm::bindings::{self, types};
use super::wasm::Ctx;
use super::Slot;

/// One slot's world.
pub trait World: Sized + Send + Sync + 'static {
    /// The slot whose world this is.
    const SLOT: Slot;
    /// The generated pre-instantiated bindings (`*Pre<Ctx>`).
    type Pre: Clone + Send + Sync + 'static;
    /// The generated bindings of an instance.
    type Bindings: Send + 'static;
    /// What a call is given, borrowed from the caller.
    type Input<'a>: Canonical + Copy;
    /// What a call answers, before the host's output rules.
    type Output;

    /// Checks a linked component against the world.
    fn pre(pre: InstancePre<Ctx>) -> wasmtime::Result<Self::Pre>;
    /// Makes an instance.
    fn instantiate(pre: &Self::Pre, store: &mut Store<Ctx>) -> wasmtime::Result<Self::Bindings>;
    /// Calls the world's export.
    fn call(
        bindings: &Self::Bindings,
        store: &mut Store<Ctx>,
        input: Self::Input<'_>,
    ) -> wasmtime::Result<Self::Output>;
    /// The instant the call's WASI clocks read.
    fn now_ms(input: Self::Input<'_>) -> i64;
}

/// The `bid-validator` world.
pub struct Validator;
/// The `notification-shaper` world.
pub struct Shaper;
/// The `event-filter` world.
pub struct Filter;
/// The `stream-authorizer` world.
pub struct Authorizer;

/// The validator's input: a bid, its product as it stands, and the time.
#[derive(Debug, Clone, Copy)]
pub struct ValidateInput<'a> {
    /// The bid being decided.
    pub bid: &'a types::Bid,
    /// Its product before the bid.
    pub product: &'a types::Product,
    /// The decision's time, ms since the epoch.
    pub now: i64,
}

/// The event filter's input: an event and one subscription shape.
#[derive(Debug, Clone, Copy)]
pub struct FilterInput<'a> {
    /// The event about to be delivered.
    pub event: &'a types::Event,
    /// The subscription's shape (its parameters, sorted).
    pub subscription: &'a Vec<(String, String)>,
}

impl World for Validator {
    const SLOT: Slot = Slot::BidValidator;
    type Pre = bindings::validator::BidValidatorPre<Ctx>;
    type Bindings = bindings::validator::BidValidator;
    type Input<'a> = ValidateInput<'a>;
    type Output = types::Verdict;

    fn pre(pre: InstancePre<Ctx>) -> wasmtime::Result<Self::Pre> {
        Self::Pre::new(pre)
    }
    fn instantiate(pre: &Self::Pre, store: &mut Store<Ctx>) -> wasmtime::Result<Self::Bindings> {
        pre.instantiate(store)
    }
    fn call(
        b: &Self::Bindings,
        store: &mut Store<Ctx>,
        i: ValidateInput<'_>,
    ) -> wasmtime::Result<types::Verdict> {
        b.call_validate(store, i.bid, i.product, i.now)
    }
    fn now_ms(i: ValidateInput<'_>) -> i64 {
        i.now
    }
}

impl World for Shaper {
    const SLOT: Slot = Slot::NotificationShaper;
    type Pre = bindings::shaper::NotificationShaperPre<Ctx>;
    type Bindings = bindings::shaper::NotificationShaper;
    type Input<'a> = &'a types::Message;
    type Output = Vec<types::Notification>;

    fn pre(pre: InstancePre<Ctx>) -> wasmtime::Result<Self::Pre> {
        Self::Pre::new(pre)
    }
    fn instantiate(pre: &Self::Pre, store: &mut Store<Ctx>) -> wasmtime::Result<Self::Bindings> {
        pre.instantiate(store)
    }
    fn call(
        b: &Self::Bindings,
        store: &mut Store<Ctx>,
        message: &types::Message,
    ) -> wasmtime::Result<Vec<types::Notification>> {
        b.call_shape(store, message)
    }
    fn now_ms(message: &types::Message) -> i64 {
        message.created_at
    }
}

impl World for Filter {
    const SLOT: Slot = Slot::EventFilter;
    type Pre = bindings::filter::EventFilterPre<Ctx>;
    type Bindings = bindings::filter::EventFilter;
    type Input<'a> = FilterInput<'a>;
    type Output = types::FilterResult;

    fn pre(pre: InstancePre<Ctx>) -> wasmtime::Result<Self::Pre> {
        Self::Pre::new(pre)
    }
    fn instantiate(pre: &Self::Pre, store: &mut Store<Ctx>) -> wasmtime::Result<Self::Bindings> {
        pre.instantiate(store)
    }
    fn call(
        b: &Self::Bindings,
        store: &mut Store<Ctx>,
        i: FilterInput<'_>,
    ) -> wasmtime::Result<types::FilterResult> {
        b.call_filter(store, i.event, i.subscription)
    }
    fn now_ms(i: FilterInput<'_>) -> i64 {
        i.event.ts
    }
}

impl World for Authorizer {
    const SLOT: Slot = Slot::StreamAuthorizer;
    type Pre = bindings::authorizer::StreamAuthorizerPre<Ctx>;
    type Bindings = bindings::authorizer::StreamAuthorizer;
    type Input<'a> = &'a types::StreamRequest;
    type Output = types::Authorization;

    fn pre(pre: InstancePre<Ctx>) -> wasmtime::Result<Self::Pre> {
        Self::Pre::new(pre)
    }
    fn instantiate(pre: &Self::Pre, store: &mut Store<Ctx>) -> wasmtime::Result<Self::Bindings> {
        pre.instantiate(store)
    }
    fn call(
        b: &Self::Bindings,
        store: &mut Store<Ctx>,
        request: &types::StreamRequest,
    ) -> wasmtime::Result<types::Authorization> {
        b.call_authorize(store, request)
    }
    fn now_ms(request: &types::StreamRequest) -> i64 {
        request.now
    }
}

/// Runs `$body` with `$W` the world type of the slot `$slot` (a value known
/// only at run time: an admin request, a cases file).
macro_rules! by_world {
    ($slot:expr, $W:ident => $body:expr) => {
        match $slot {
            $crate::plugins::Slot::BidValidator => {
                type $W = $crate::plugins::world::Validator;
                $body
            }
            $crate::plugins::Slot::NotificationShaper => {
                type $W = $crate::plugins::world::Shaper;
                $body
            }
            $crate::plugins::Slot::EventFilter => {
                type $W = $crate::plugins::world::Filter;
                $body
            }
            $crate::plugins::Slot::StreamAuthorizer => {
                type $W = $crate::plugins::world::Authorizer;
                $body
            }
        }
    };
}
pub(crate) use by_world;

/// A value's one canonical encoding into a call's seed: the same value
/// always encodes to the same bytes, and two different values never do
/// (strings and lists are length-prefixed, options tagged).
pub trait Canonical {
    /// Adds the value to `seed`.
    fn encode(&self, seed: &mut Seed);
}

impl Canonical for str {
    fn encode(&self, seed: &mut Seed) {
        seed.str(self);
    }
}

impl Canonical for String {
    fn encode(&self, seed: &mut Seed) {
        seed.str(self);
    }
}

impl Canonical for i64 {
    fn encode(&self, seed: &mut Seed) {
        seed.int(*self);
    }
}

impl<T: Canonical> Canonical for Option<T> {
    fn encode(&self, seed: &mut Seed) {
        match self {
            None => {
                seed.int(0);
            }
            Some(v) => {
                seed.int(1);
                v.encode(seed);
            }
        }
    }
}

impl<T: Canonical> Canonical for [T] {
    fn encode(&self, seed: &mut Seed) {
        seed.int(self.len() as i64);
        for v in self {
            v.encode(seed);
        }
    }
}

impl<T: Canonical> Canonical for Vec<T> {
    fn encode(&self, seed: &mut Seed) {
        self.as_slice().encode(seed);
    }
}

impl<A: Canonical, B: Canonical> Canonical for (A, B) {
    fn encode(&self, seed: &mut Seed) {
        self.0.encode(seed);
        self.1.encode(seed);
    }
}

impl<T: Canonical + ?Sized> Canonical for &T {
    fn encode(&self, seed: &mut Seed) {
        (**self).encode(seed);
    }
}

/// `Canonical` for records, each taken apart with an exhaustive pattern (no
/// `..`): a field the encoding does not name does not compile.
macro_rules! canonical_records {
    ($($ty:ident $(<$lt:lifetime>)? { $($field:ident),* $(,)? })*) => {$(
        impl $(<$lt>)? Canonical for $ty $(<$lt>)? {
            fn encode(&self, seed: &mut Seed) {
                let $ty { $($field),* } = self;
                $( $field.encode(seed); )*
            }
        }
    )*};
}

use types::{Bid, Event, Message, Product, StreamRequest};

canonical_records! {
    Bid { id, tenant, product_id, bidder_id, amount, created_at }
    Product {
        id, tenant, seller_id, title, starting_price, min_increment, anti_snipe_ms,
        ends_at, status, current_bid, leader, bid_count, version, created_at,
    }
    Message { id, tenant, kind, from, to, product_id, body, created_at }
    Event { id, tenant, topic, type_, data, ts }
    StreamRequest { caller, user, tenant, topics, params, now }
    ValidateInput<'a> { bid, product, now }
    FilterInput<'a> { event, subscription }
}

/// The seed of one call of the version labelled `label` on `input`.
pub fn seed_of<T: Canonical>(label: &str, input: T) -> [u8; 32] {
    let mut seed = Seed::new(label);
    input.encode(&mut seed);
    seed.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asserts that every variant of `base` (each one field changed) gets a
    /// seed of its own, different from the base's and from each other's: a
    /// field the encoding left out would give two equal seeds.
    fn every_field_counts<T: Canonical>(base: T, variants: Vec<T>) {
        let mut seen = std::collections::HashSet::new();
        assert!(seen.insert(seed_of("v", &base)));
        let n = variants.len();
        for (i, v) in variants.into_iter().enumerate() {
            assert!(
                seen.insert(seed_of("v", &v)),
                "variant {i} of {n} has the seed of another input: a field is not encoded"
            );
        }
        // The same input gives the same seed; another version another one.
        assert_eq!(seed_of("v", &base), seed_of("v", &base));
        assert_ne!(seed_of("v", &base), seed_of("w", &base));
    }

    /// Returns copies of `base`, each with one change made by `edits`.
    fn each<T: Clone>(base: &T, edits: &[&dyn Fn(&mut T)]) -> Vec<T> {
        edits
            .iter()
            .map(|edit| {
                let mut v = base.clone();
                edit(&mut v);
                v
            })
            .collect()
    }

    fn bid() -> Bid {
        Bid {
            id: "b1".into(),
            tenant: "t".into(),
            product_id: "p1".into(),
            bidder_id: "u1".into(),
            amount: 100,
            created_at: 5,
        }
    }

    fn product() -> Product {
        Product {
            id: "p1".into(),
            tenant: "t".into(),
            seller_id: "s".into(),
            title: "lamp".into(),
            starting_price: 10,
            min_increment: 1,
            anti_snipe_ms: 0,
            ends_at: None,
            status: "open".into(),
            current_bid: None,
            leader: None,
            bid_count: 0,
            version: 1,
            created_at: 2,
        }
    }

    #[test]
    fn every_field_of_a_bid_and_product_changes_the_seed() {
        let (b, p) = (bid(), product());
        let bids = each(
            &b,
            &[
                &|x| x.id.push('x'),
                &|x| x.tenant.push('x'),
                &|x| x.product_id.push('x'),
                &|x| x.bidder_id.push('x'),
                &|x| x.amount += 1,
                &|x| x.created_at += 1,
            ],
        );
        let products = each(
            &p,
            &[
                &|x| x.id.push('x'),
                &|x| x.tenant.push('x'),
                &|x| x.seller_id.push('x'),
                &|x| x.title.push('x'),
                &|x| x.starting_price += 1,
                &|x| x.min_increment += 1,
                &|x| x.anti_snipe_ms += 1,
                &|x| x.ends_at = Some(0),
                &|x| x.status.push('x'),
                &|x| x.current_bid = Some(0),
                &|x| x.leader = Some(String::new()),
                &|x| x.bid_count += 1,
                &|x| x.version += 1,
                &|x| x.created_at += 1,
            ],
        );
        let base = ValidateInput {
            bid: &b,
            product: &p,
            now: 9,
        };
        let mut variants: Vec<ValidateInput> = bids
            .iter()
            .map(|bid| ValidateInput { bid, ..base })
            .collect();
        variants.extend(
            products
                .iter()
                .map(|product| ValidateInput { product, ..base }),
        );
        variants.push(ValidateInput { now: 10, ..base });
        every_field_counts(base, variants);
    }

    #[test]
    fn every_field_of_a_message_changes_the_seed() {
        let m = Message {
            id: "m1".into(),
            tenant: "t".into(),
            kind: "message".into(),
            from: "a".into(),
            to: "b".into(),
            product_id: None,
            body: "hi".into(),
            created_at: 3,
        };
        let variants = each(
            &m,
            &[
                &|x| x.id.push('x'),
                &|x| x.tenant.push('x'),
                &|x| x.kind.push('x'),
                &|x| x.from.push('x'),
                &|x| x.to.push('x'),
                &|x| x.product_id = Some(String::new()),
                &|x| x.body.push('x'),
                &|x| x.created_at += 1,
            ],
        );
        every_field_counts(&m, variants.iter().collect());
    }

    #[test]
    fn every_field_of_an_event_and_its_shape_changes_the_seed() {
        let e = Event {
            id: "1".into(),
            tenant: "t".into(),
            topic: "news".into(),
            type_: "update".into(),
            data: "{}".into(),
            ts: 4,
        };
        let shape = vec![("k".to_string(), "v".to_string())];
        let events = each(
            &e,
            &[
                &|x| x.id.push('x'),
                &|x| x.tenant.push('x'),
                &|x| x.topic.push('x'),
                &|x| x.type_.push('x'),
                &|x| x.data.push(' '),
                &|x| x.ts += 1,
            ],
        );
        let shapes = [
            vec![],
            vec![("k".to_string(), "w".to_string())],
            vec![("j".to_string(), "v".to_string())],
            vec![
                ("k".to_string(), "v".to_string()),
                ("k".to_string(), "v".to_string()),
            ],
        ];
        let base = FilterInput {
            event: &e,
            subscription: &shape,
        };
        let mut variants: Vec<FilterInput> = events
            .iter()
            .map(|event| FilterInput { event, ..base })
            .collect();
        variants.extend(shapes.iter().map(|s| FilterInput {
            subscription: s,
            ..base
        }));
        every_field_counts(base, variants);
    }

    #[test]
    fn every_field_of_a_stream_request_changes_the_seed() {
        let r = StreamRequest {
            caller: None,
            user: None,
            tenant: "t".into(),
            topics: vec!["a".into()],
            params: vec![],
            now: 7,
        };
        let variants = each(
            &r,
            &[
                &|x| x.caller = Some("{}".into()),
                &|x| x.user = Some("u".into()),
                &|x| x.tenant.push('x'),
                &|x| x.topics.push("b".into()),
                &|x| x.params.push(("k".into(), "v".into())),
                &|x| x.now += 1,
            ],
        );
        every_field_counts(&r, variants.iter().collect());
    }

    /// Strings are length-prefixed: moving a character from one field to
    /// the next is another input, and another seed.
    #[test]
    fn fields_do_not_run_into_each_other() {
        let a = ("ab".to_string(), "c".to_string());
        let b = ("a".to_string(), "bc".to_string());
        assert_ne!(seed_of("v", &a), seed_of("v", &b));
        let none: Option<String> = None;
        assert_ne!(seed_of("v", &none), seed_of("v", Some(String::new())));
    }
}
