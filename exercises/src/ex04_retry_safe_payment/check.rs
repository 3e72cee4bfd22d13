//! The checker of exercise 4: a fake provider that charges and then times out.

use super::{ChargeId, PayError, PaymentClient, PaymentProvider, ProviderError};
use crate::{Failure, ensure};
use std::cell::RefCell;
use std::collections::HashMap;

/// A provider that really charges (records it) and then, for the first
/// `timeouts_after_charge` new charges, loses the response.
#[derive(Debug, Default)]
struct FakeProvider {
    timeouts_after_charge: u32,
    decline: bool,
    always_time_out: bool,
    state: RefCell<Ledger>,
}

#[derive(Debug, Default)]
struct Ledger {
    calls: u32,
    /// (order id, charge id) for every charge actually made.
    charges: Vec<(String, ChargeId)>,
    by_key: HashMap<String, ChargeId>,
    timeouts_left: Option<u32>,
}

impl PaymentProvider for FakeProvider {
    fn charge(
        &self,
        order_id: &str,
        _amount_cents: u64,
        key: Option<&str>,
    ) -> Result<ChargeId, ProviderError> {
        let mut ledger = self.state.borrow_mut();
        ledger.calls += 1;
        if self.decline {
            return Err(ProviderError::Declined);
        }
        if self.always_time_out {
            return Err(ProviderError::Timeout);
        }
        if let Some(existing) = key.and_then(|k| ledger.by_key.get(k)) {
            return Ok(existing.clone());
        }
        let id = ChargeId(format!("ch-{}", ledger.charges.len() + 1));
        ledger.charges.push((order_id.to_string(), id.clone()));
        if let Some(k) = key {
            ledger.by_key.insert(k.to_string(), id.clone());
        }
        let left = ledger
            .timeouts_left
            .get_or_insert(self.timeouts_after_charge);
        if *left > 0 {
            *left -= 1;
            return Err(ProviderError::Timeout);
        }
        Ok(id)
    }
}

impl FakeProvider {
    fn charges_for(&self, order_id: &str) -> Vec<ChargeId> {
        let ledger = self.state.borrow();
        ledger
            .charges
            .iter()
            .filter(|(order, _)| order == order_id)
            .map(|(_, id)| id.clone())
            .collect()
    }
}

pub fn check<C: PaymentClient>() -> Result<(), Failure> {
    let client = C::new();
    a_healthy_provider_charges_once(&client)?;
    a_timeout_after_charging_does_not_charge_twice(&client)?;
    keys_differ_between_orders(&client)?;
    a_decline_is_not_retried(&client)?;
    a_provider_that_never_answers_is_given_up_on(&client)?;
    Ok(())
}

fn a_healthy_provider_charges_once(client: &dyn PaymentClient) -> Result<(), Failure> {
    let provider = FakeProvider::default();
    let result = client.pay(&provider, "7", 2_500);
    ensure(result.is_ok(), || {
        format!("a healthy provider, yet pay() returned {result:?}")
    })?;
    let charges = provider.charges_for("7");
    ensure(charges.len() == 1, || {
        format!(
            "a healthy provider was charged {} times for one order",
            charges.len()
        )
    })
}

fn a_timeout_after_charging_does_not_charge_twice(
    client: &dyn PaymentClient,
) -> Result<(), Failure> {
    let provider = FakeProvider {
        timeouts_after_charge: 1,
        ..FakeProvider::default()
    };
    let result = client.pay(&provider, "7", 2_500);
    let charges = provider.charges_for("7");
    ensure(charges.len() == 1, || {
        format!(
            "order 7 was charged {} times ({}): the first call charged the card and then timed \
             out, and the retry charged it again. A timeout is not \"not charged\" — every \
             attempt must carry the same idempotency key",
            charges.len(),
            charges
                .iter()
                .map(|c| c.0.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    ensure(result.as_ref() == Ok(&charges[0]), || {
        format!(
            "the card was charged once ({}), but pay() returned {result:?}: the customer paid and \
             was told it failed. Retry the timeout with the same key to get the charge back",
            charges[0].0
        )
    })
}

fn keys_differ_between_orders(client: &dyn PaymentClient) -> Result<(), Failure> {
    let provider = FakeProvider {
        timeouts_after_charge: 1,
        ..FakeProvider::default()
    };
    let first = client.pay(&provider, "8", 1_000);
    let second = client.pay(&provider, "9", 4_000);
    let (for_8, for_9) = (provider.charges_for("8"), provider.charges_for("9"));
    ensure(for_8.len() == 1 && for_9.len() == 1, || {
        format!(
            "two orders, 8 and 9, were charged {} and {} times; each must be charged exactly once \
             (pay() returned {first:?} and {second:?}). A key that is the same for every order \
             makes order 9 get order 8's charge back: derive the key from the order id",
            for_8.len(),
            for_9.len()
        )
    })?;
    ensure(second.as_ref() == Ok(&for_9[0]), || {
        format!(
            "order 9 was charged {} but pay() returned {second:?}",
            for_9[0].0
        )
    })
}

fn a_decline_is_not_retried(client: &dyn PaymentClient) -> Result<(), Failure> {
    let provider = FakeProvider {
        decline: true,
        ..FakeProvider::default()
    };
    let result = client.pay(&provider, "10", 999);
    let calls = provider.state.borrow().calls;
    ensure(result == Err(PayError::Declined), || {
        format!(
            "the provider declined the card, so pay() must return Err(Declined), got {result:?}"
        )
    })?;
    ensure(calls == 1, || {
        format!(
            "the provider declined the card and was asked {calls} times: a decline is an answer, \
             not a transient failure — retrying it only adds load"
        )
    })
}

fn a_provider_that_never_answers_is_given_up_on(client: &dyn PaymentClient) -> Result<(), Failure> {
    let provider = FakeProvider {
        always_time_out: true,
        ..FakeProvider::default()
    };
    let result = client.pay(&provider, "11", 500);
    let calls = provider.state.borrow().calls;
    ensure(result == Err(PayError::Unavailable), || {
        format!(
            "the provider never answered, so pay() must return Err(Unavailable), got {result:?}"
        )
    })?;
    ensure((2..=5).contains(&calls), || {
        format!(
            "the provider never answered and was called {calls} times; retry a timeout a few times (2 to 5 attempts), then give up"
        )
    })
}
