//! Deleting Kafka topics without a Kafka client: `DeleteTopics`, written by hand
//! on the framing of [`super::probe`].
//!
//! `cargo xtask reset` deletes the workshop's topics. Kafka's own `kafka-topics.sh`
//! is not at hand: it runs `org.apache.kafka.tools.TopicCommand` from the
//! `kafka-tools` jar of the release tarball, and the installation `cargo xtask up`
//! makes is the broker's jars from Maven Central (`xtask/kafka/pom.xml`), which do not
//! include it. librdkafka would take minutes to compile into xtask. So, like the
//! readiness probe ([`super::probe`]), the one request is written out here (big-endian integers, strings as `len:i16` and bytes):
//!
//! ```text
//! request:  size:i32  api_key:i16=20  api_version:i16=1  correlation_id:i32  client_id:string
//!           topic_names:(count:i32, count × string)  timeout_ms:i32
//! response: size:i32  correlation_id:i32  throttle_time_ms:i32
//!           responses:(count:i32, count × (name:string, error_code:i16))
//! ```
//!
//! Version 1 is the oldest Kafka 4 serves (it supports 1–6; from 4 on the encoding
//! changes to "flexible" compact strings and tagged fields). Any broker of a cluster
//! takes it and forwards it to the active controller; the answer comes once the
//! deletion is committed to the cluster's metadata. Each topic gets its own error
//! code: 0 (deleted), 3 (there was no such topic), or another failure.
//!
//! `xtask/tests/reset.rs` makes the topics it then asks `reset` to delete with
//! `CreateTopics`, through [`request`] and [`Input`].

use super::probe;
pub use super::probe::Input;
use anyhow::{Context, bail, ensure};
use std::time::Duration;

pub const DELETE_TOPICS: i16 = 20;

/// The error code "there is no such topic".
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

/// Deletes `topics` through the first of `brokers` (`host:port[,host:port…]`) that
/// answers; returns each topic's error code (0: deleted; see [`error_name`]). The
/// broker waits up to `timeout` for the deletion to be committed.
pub fn delete(
    brokers: &str,
    topics: &[String],
    timeout: Duration,
) -> anyhow::Result<Vec<(String, i16)>> {
    if topics.is_empty() {
        return Ok(Vec::new());
    }
    let mut body = Vec::new();
    put_i32(&mut body, topics.len() as i32);
    for topic in topics {
        put_string(&mut body, topic);
    }
    put_i32(&mut body, timeout.as_millis() as i32);
    let response = request(brokers, DELETE_TOPICS, 1, &body, timeout)?;
    let mut input = Input(&response);
    let _throttle_ms = input.i32()?;
    let count = input.count()?;
    let mut results = Vec::with_capacity(count);
    for _ in 0..count {
        let name = input.string()?.context("a topic without a name")?;
        results.push((name, input.i16()?));
    }
    Ok(results)
}

/// What a Kafka error code means, for messages (the ones topic requests answer).
pub fn error_name(code: i16) -> &'static str {
    match code {
        0 => "none",
        3 => "UNKNOWN_TOPIC_OR_PARTITION",
        7 => "REQUEST_TIMED_OUT (the deletion may still complete)",
        29 => "TOPIC_AUTHORIZATION_FAILED",
        36 => "TOPIC_ALREADY_EXISTS",
        41 => "NOT_CONTROLLER",
        73 => "TOPIC_DELETION_DISABLED (delete.topic.enable=false on the broker)",
        _ => "see https://kafka.apache.org/protocol#protocol_error_codes",
    }
}

/// Sends one request (`api_key`, version `api_version`, request header v1) with
/// `body` to the first of `brokers` that accepts a connection, and returns the
/// response after its correlation id (response header v0). `timeout` is how long the
/// broker may work on it; the read waits a little longer.
pub fn request(
    brokers: &str,
    api_key: i16,
    api_version: i16,
    body: &[u8],
    timeout: Duration,
) -> anyhow::Result<Vec<u8>> {
    let correlation_id = probe::correlation_id();
    let frame = probe::frame(api_key, api_version, correlation_id, body);
    let mut errors = Vec::new();
    for broker in brokers.split(',').map(str::trim).filter(|b| !b.is_empty()) {
        let what = format!("request {api_key} v{api_version}");
        match probe::exchange(broker, &frame, &what, timeout + Duration::from_secs(5)) {
            Ok(response) => {
                let mut input = Input(&response);
                let echoed = input.i32()?;
                ensure!(
                    echoed == correlation_id,
                    "the correlation id {echoed} is not ours ({correlation_id}): not the Kafka protocol"
                );
                return Ok(input.0.to_vec());
            }
            Err(err) => errors.push(format!("{err:#}")),
        }
    }
    bail!("cannot reach Kafka at {brokers} ({})", errors.join("; "))
}

pub fn put_i32(out: &mut Vec<u8>, n: i32) {
    out.extend_from_slice(&n.to_be_bytes());
}

pub fn put_string(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as i16).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// A one-connection broker that reads one request and answers with `answer(request)`.
    fn fake_broker(answer: fn(&[u8]) -> Vec<u8>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut size = [0; 4];
            conn.read_exact(&mut size).unwrap();
            let mut request = vec![0; i32::from_be_bytes(size) as usize];
            conn.read_exact(&mut request).unwrap();
            let body = answer(&request);
            conn.write_all(&(body.len() as i32).to_be_bytes()).unwrap();
            conn.write_all(&body).unwrap();
        });
        addr
    }

    #[test]
    fn delete_topics_is_framed_and_answered_per_topic() {
        let addr = fake_broker(|request| {
            // The header: DeleteTopics v1, then our correlation id and client id.
            assert_eq!(&request[..4], &[0, 20, 0, 1]);
            let mut input = Input(&request[4..]);
            let correlation_id = input.i32().unwrap();
            assert_eq!(input.string().unwrap().as_deref(), Some("ferriseats-xtask"));
            // The body: two names and a timeout.
            assert_eq!(input.count().unwrap(), 2);
            assert_eq!(input.string().unwrap().as_deref(), Some("orders"));
            assert_eq!(input.string().unwrap().as_deref(), Some("orders.dlq"));
            assert_eq!(input.i32().unwrap(), 30_000);
            assert!(input.0.is_empty());
            let mut body = Vec::new();
            put_i32(&mut body, correlation_id);
            put_i32(&mut body, 0); // throttle time
            put_i32(&mut body, 2);
            put_string(&mut body, "orders");
            body.extend_from_slice(&0_i16.to_be_bytes());
            put_string(&mut body, "orders.dlq");
            body.extend_from_slice(&UNKNOWN_TOPIC_OR_PARTITION.to_be_bytes());
            body
        });
        let topics = ["orders".to_owned(), "orders.dlq".to_owned()];
        let results = delete(&addr, &topics, Duration::from_secs(30)).unwrap();
        assert_eq!(
            results,
            [
                ("orders".to_owned(), 0),
                ("orders.dlq".to_owned(), UNKNOWN_TOPIC_OR_PARTITION)
            ]
        );
    }

    #[test]
    fn another_protocol_is_not_kafka() {
        let addr = fake_broker(|_| b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec());
        let err = delete(&addr, &["orders".to_owned()], Duration::from_secs(1)).unwrap_err();
        assert!(format!("{err:#}").contains("correlation id"), "{err:#}");
    }

    #[test]
    fn no_broker_is_an_error_naming_the_address() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let brokers = format!("127.0.0.1:{port}");
        let err = delete(&brokers, &["orders".to_owned()], Duration::from_secs(1)).unwrap_err();
        assert!(format!("{err:#}").contains(&brokers), "{err:#}");
    }
}
