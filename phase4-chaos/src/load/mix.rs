//! What virtual customers do: browse the menu, place an order (with an
//! `Idempotency-Key`), poll an order's status, now and then submit the same order
//! twice — each with a bearer token of their own.
//!
//! Every choice comes from one seeded generator, so `--seed N` repeats a run's
//! requests exactly: the same customers, items, keys and order of endpoints.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Mutex;

/// The kinds of request, each one endpoint of the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// `GET /menu`, anonymous.
    Menu,
    /// `POST /orders` with a fresh `Idempotency-Key`.
    Place,
    /// `GET /orders/{id}` of an order this run placed.
    Status,
    /// `POST /orders` again with an earlier request's key and body: a client that
    /// did not see the first answer. The order must exist once.
    Duplicate,
}

impl Endpoint {
    pub const ALL: [Endpoint; 4] = [
        Endpoint::Menu,
        Endpoint::Place,
        Endpoint::Status,
        Endpoint::Duplicate,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Menu => "menu",
            Endpoint::Place => "place",
            Endpoint::Status => "status",
            Endpoint::Duplicate => "duplicate",
        }
    }

    /// Writes are what admission control sheds first.
    pub fn is_write(self) -> bool {
        matches!(self, Endpoint::Place | Endpoint::Duplicate)
    }
}

/// Weights of the endpoints, e.g. `menu=30,place=40,status=25,duplicate=5`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mix {
    pub weights: Vec<(Endpoint, u32)>,
}

impl Default for Mix {
    /// Browsing and polling outnumber ordering, as in any shop; 5 % of orders are
    /// sent twice.
    fn default() -> Self {
        Mix {
            weights: vec![
                (Endpoint::Menu, 30),
                (Endpoint::Place, 40),
                (Endpoint::Status, 25),
                (Endpoint::Duplicate, 5),
            ],
        }
    }
}

impl std::str::FromStr for Mix {
    type Err = String;

    fn from_str(text: &str) -> Result<Mix, String> {
        let mut weights = Vec::new();
        for part in text.split(',').filter(|p| !p.trim().is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}`: expected NAME=WEIGHT"))?;
            let endpoint = Endpoint::ALL
                .into_iter()
                .find(|e| e.name() == name.trim())
                .ok_or_else(|| format!("`{name}`: one of menu, place, status, duplicate"))?;
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|_| format!("`{weight}`: a whole number"))?;
            weights.push((endpoint, weight));
        }
        if weights.iter().map(|(_, w)| w).sum::<u32>() == 0 {
            return Err("the weights add up to 0".to_owned());
        }
        Ok(Mix { weights })
    }
}

/// The SKUs a virtual customer orders from (phase 1's seeded menu).
const SKUS: [&str; 4] = ["pizza-margherita", "burger-classic", "cola", "fries"];

/// One request to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub endpoint: Endpoint,
    /// Index into the customers (and their tokens).
    pub customer: usize,
    /// Path and query.
    pub path: String,
    /// `POST` body and `Idempotency-Key`.
    pub order: Option<(String, String)>,
}

/// The plan of a run: draws the next request, and remembers what was placed so that
/// status polls and duplicates refer to real orders.
#[derive(Debug)]
pub struct Plan {
    mix: Mix,
    customers: usize,
    /// Mixed into every `Idempotency-Key`: the same seed plans the same requests, but
    /// a second run must not replay the first run's keys (the API would answer them
    /// from its idempotency store, or refuse them when the body differs).
    run: [u8; 16],
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    rng: StdRng,
    /// Orders placed (customer, path), newest last; bounded.
    placed: VecDeque<(usize, String)>,
    /// Recent place requests (customer, body, key), for duplicates; bounded.
    sent: VecDeque<(usize, String, String)>,
}

const REMEMBERED: usize = 4096;

impl Plan {
    pub fn new(mix: Mix, customers: usize, seed: u64, run: [u8; 16]) -> Plan {
        Plan {
            mix,
            customers: customers.max(1),
            run,
            state: Mutex::new(State {
                rng: StdRng::seed_from_u64(seed),
                placed: VecDeque::new(),
                sent: VecDeque::new(),
            }),
        }
    }

    /// The next request. A status poll before any order was placed, or a duplicate
    /// before any was sent, becomes a menu read.
    pub fn next(&self) -> Planned {
        let mut guard = self.state.lock().expect("plan lock");
        let state = &mut *guard;
        let total: u32 = self.mix.weights.iter().map(|(_, w)| w).sum();
        let mut roll = state.rng.random_range(0..total);
        let mut endpoint = Endpoint::Menu;
        for (candidate, weight) in &self.mix.weights {
            if roll < *weight {
                endpoint = *candidate;
                break;
            }
            roll -= weight;
        }
        let customer = state.rng.random_range(0..self.customers);
        match endpoint {
            Endpoint::Place => {
                // One or two different SKUs (the API refuses a SKU on two lines).
                let first = state.rng.random_range(0..SKUS.len());
                let second = (first + state.rng.random_range(1..SKUS.len())) % SKUS.len();
                let lines = if state.rng.random::<bool>() {
                    vec![first]
                } else {
                    vec![first, second]
                };
                let items: Vec<String> = lines
                    .into_iter()
                    .map(|sku| {
                        let qty = state.rng.random_range(1..=3u8);
                        format!(r#"{{"sku":"{}","qty":{qty}}}"#, SKUS[sku])
                    })
                    .collect();
                // The gateway takes the customer from the token; the body names the
                // same one, so the mix also runs against an order API without a
                // gateway (phases 1–3: `cargo xtask footprint` loads them this way).
                let body = format!(
                    r#"{{"customer_id":"{}","items":[{}]}}"#,
                    customer_name(customer),
                    items.join(",")
                );
                let mut bytes: [u8; 16] = state.rng.random();
                for (byte, run) in bytes.iter_mut().zip(self.run) {
                    *byte ^= run;
                }
                let key = uuid::Builder::from_random_bytes(bytes)
                    .into_uuid()
                    .to_string();
                if state.sent.len() == REMEMBERED {
                    state.sent.pop_front();
                }
                state.sent.push_back((customer, body.clone(), key.clone()));
                Planned {
                    endpoint,
                    customer,
                    path: "/orders".to_owned(),
                    order: Some((body, key)),
                }
            }
            Endpoint::Status if !state.placed.is_empty() => {
                let len = state.placed.len();
                let index = state.rng.random_range(0..len);
                let (owner, path) = state.placed[index].clone();
                Planned {
                    endpoint,
                    customer: owner,
                    path,
                    order: None,
                }
            }
            Endpoint::Duplicate if !state.sent.is_empty() => {
                let len = state.sent.len();
                let index = state.rng.random_range(0..len);
                let (owner, body, key) = state.sent[index].clone();
                Planned {
                    endpoint,
                    customer: owner,
                    path: "/orders".to_owned(),
                    order: Some((body, key)),
                }
            }
            _ => Planned {
                endpoint: Endpoint::Menu,
                customer,
                path: "/menu".to_owned(),
                order: None,
            },
        }
    }

    /// An order was placed: later status polls may ask for it.
    pub fn placed(&self, customer: usize, location: String) {
        let mut state = self.state.lock().expect("plan lock");
        if state.placed.len() == REMEMBERED {
            state.placed.pop_front();
        }
        state.placed.push_back((customer, location));
    }
}

/// The customer a virtual user is (its token's subject, its orders' `customer_id`).
pub fn customer_name(customer: usize) -> String {
    format!("vu-{customer:05}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_plans_the_same_requests() {
        let plan = |seed| {
            let plan = Plan::new(Mix::default(), 50, seed, [0; 16]);
            (0..200).map(|_| plan.next()).collect::<Vec<_>>()
        };
        assert_eq!(plan(7), plan(7));
        assert_ne!(plan(7), plan(8));
    }

    #[test]
    fn the_mix_is_followed_and_polls_ask_for_placed_orders() {
        let plan = Plan::new("place=1,status=1".parse().unwrap(), 3, 1, [0; 16]);
        let first = plan.next();
        // Nothing placed yet: a poll would have nothing to ask for.
        assert!(matches!(first.endpoint, Endpoint::Place | Endpoint::Menu));
        plan.placed(2, "/orders/abc".to_owned());
        let polls: Vec<_> = (0..100)
            .map(|_| plan.next())
            .filter(|p| p.endpoint == Endpoint::Status)
            .collect();
        assert!(polls.len() > 30, "about half are polls: {}", polls.len());
        assert!(
            polls
                .iter()
                .all(|p| p.path == "/orders/abc" && p.customer == 2)
        );
    }

    #[test]
    fn a_duplicate_resends_an_earlier_order_with_its_key() {
        let plan = Plan::new("place=1,duplicate=3".parse().unwrap(), 10, 3, [7; 16]);
        let mut keys = std::collections::HashMap::new();
        for _ in 0..200 {
            let planned = plan.next();
            if planned.endpoint == Endpoint::Menu {
                continue; // a duplicate before any order was sent
            }
            let (body, key) = planned.order.clone().unwrap();
            match planned.endpoint {
                Endpoint::Place => {
                    keys.insert(key, (planned.customer, body));
                }
                Endpoint::Duplicate => {
                    assert_eq!(
                        keys[&key],
                        (planned.customer, body),
                        "same customer, body, key"
                    );
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn bad_mixes_are_refused_with_the_reason() {
        assert!(
            "menu=1,sleep=2"
                .parse::<Mix>()
                .unwrap_err()
                .contains("sleep")
        );
        assert!("menu=0".parse::<Mix>().unwrap_err().contains("0"));
        assert!("menu".parse::<Mix>().unwrap_err().contains("NAME=WEIGHT"));
    }
}
