//! "Does this server speak Kafka, and is it ready?" — two requests, written by hand.
//!
//! A port that accepts TCP proves little: it could be anything. Every Kafka client
//! (librdkafka included) opens a connection by asking the broker which versions of
//! which requests it supports, so a broker that answers `ApiVersions` well-formed is
//! one our services can talk to. *Ready* is more: a KRaft node answers `Metadata`
//! with the brokers of its cluster only once it has caught up with the controller
//! quorum and been unfenced, which is when producers and consumers can use it.
//!
//! Both requests are small enough to write out here instead of pulling a Kafka client
//! (librdkafka takes minutes to compile) into `cargo xtask up`, and reading them shows
//! how the protocol is framed. All integers are big-endian.
//!
//! ```text
//! request:  size:i32  api_key:i16=18  api_version:i16=0  correlation_id:i32
//!           client_id:(len:i16, bytes)
//! response: size:i32  correlation_id:i32  error_code:i16
//!           api_keys:(count:i32, count × (api_key:i16, min_version:i16, max_version:i16))
//! ```
//!
//! `size` counts the bytes after itself. Version 0 is the one every broker accepts
//! (newer versions add tagged fields and a throttle time). The broker copies our
//! `correlation_id` into its answer — that is how a client matches responses to
//! requests — so we check it, the error code, that the byte count adds up, and
//! that the list includes ApiVersions (18) itself.
//!
//! `Metadata` v1 (the oldest that Kafka 4 still serves with an empty topic list) asks
//! for no topic at all, only the brokers:
//!
//! ```text
//! request:  size:i32  api_key:i16=3  api_version:i16=1  correlation_id:i32
//!           client_id:(len:i16, bytes)  topics:(count:i32=0)
//! response: size:i32  correlation_id:i32
//!           brokers:(count:i32, count × (node_id:i32, host:string, port:i32, rack:nullable string))
//!           controller_id:i32  topics:(count:i32=0, …)
//! ```

use anyhow::{Context, bail, ensure};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

const API_VERSIONS: i16 = 18;
const METADATA: i16 = 3;
const CLIENT_ID: &str = "ferriseats-xtask";
/// Anything larger is not an answer to these requests (a real one is a few hundred bytes).
const MAX_RESPONSE: usize = 1 << 20;

/// One entry of the broker's answer: request type `api_key`, versions `min..=max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiVersion {
    pub api_key: i16,
    pub min_version: i16,
    pub max_version: i16,
}

/// Sends ApiVersions v0 to `addr` (`host:port`) and returns the supported APIs.
/// Each step (connect, write, read) gives up after `timeout`.
pub fn api_versions(addr: &str, timeout: Duration) -> anyhow::Result<Vec<ApiVersion>> {
    let correlation_id = correlation_id();
    let body = exchange(
        addr,
        &encode_request(correlation_id),
        "ApiVersions",
        timeout,
    )?;
    decode_response(correlation_id, &body).with_context(|| format!("ApiVersions from {addr}"))
}

/// One broker of a cluster, as `Metadata` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    pub node_id: i32,
    pub host: String,
    pub port: u16,
}

/// What `Metadata` says about the cluster: the brokers that are up (registered and
/// unfenced) and which node is the active controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    pub brokers: Vec<Broker>,
    pub controller_id: i32,
}

/// Sends Metadata v1 (no topics) to `addr` and returns the brokers it lists.
pub fn metadata(addr: &str, timeout: Duration) -> anyhow::Result<ClusterView> {
    let correlation_id = correlation_id();
    let body = exchange(
        addr,
        &encode_metadata_request(correlation_id),
        "Metadata",
        timeout,
    )?;
    decode_metadata_response(correlation_id, &body).with_context(|| format!("Metadata from {addr}"))
}

/// Connects to `addr`, writes `frame`, and returns the body of the one response.
pub(crate) fn exchange(
    addr: &str,
    frame: &[u8],
    what: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<u8>> {
    let addrs: Vec<_> = addr
        .to_socket_addrs()
        .with_context(|| format!("{addr:?} is not HOST:PORT, or the host is unknown"))?
        .collect();
    let mut last_err = None;
    let mut stream = None;
    for sock in &addrs {
        match TcpStream::connect_timeout(sock, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(err) => last_err = Some(err),
        }
    }
    let Some(mut stream) = stream else {
        return Err(match last_err {
            Some(err) => anyhow::anyhow!("cannot connect to {addr}: {err}"),
            None => anyhow::anyhow!("{addr} resolves to no address"),
        });
    };
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream
        .write_all(frame)
        .with_context(|| format!("sending {what} to {addr}"))?;
    let mut size = [0; 4];
    stream
        .read_exact(&mut size)
        .with_context(|| format!("{addr} did not answer {what} (not a Kafka broker?)"))?;
    let size = i32::from_be_bytes(size);
    let Ok(size) = usize::try_from(size) else {
        bail!("{addr} answered with a negative frame size ({size}): not the Kafka protocol");
    };
    ensure!(
        (6..=MAX_RESPONSE).contains(&size),
        "{addr} answered with a frame of {size} bytes: not a {what} response"
    );
    let mut body = vec![0; size];
    stream
        .read_exact(&mut body)
        .with_context(|| format!("{addr} sent a truncated {what} response"))?;
    Ok(body)
}

/// A correlation id that differs between runs, so an answer meant for someone else
/// (or a server that echoes a constant) is not taken for ours.
pub(crate) fn correlation_id() -> i32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    // Masked to 31 bits, so the cast cannot wrap to a negative id.
    ((nanos ^ std::process::id()) & 0x7fff_ffff) as i32
}

/// The request header every request starts with, then `rest`, with the size prefix.
pub(crate) fn frame(api_key: i16, api_version: i16, correlation_id: i32, rest: &[u8]) -> Vec<u8> {
    let client_id = CLIENT_ID.as_bytes();
    let mut body = Vec::with_capacity(10 + client_id.len() + rest.len());
    body.extend_from_slice(&api_key.to_be_bytes());
    body.extend_from_slice(&api_version.to_be_bytes());
    body.extend_from_slice(&correlation_id.to_be_bytes());
    body.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
    body.extend_from_slice(client_id);
    body.extend_from_slice(rest);
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

/// The ApiVersions v0 request frame, size prefix included.
pub fn encode_request(correlation_id: i32) -> Vec<u8> {
    frame(API_VERSIONS, 0, correlation_id, &[])
}

/// The Metadata v1 request frame for no topics (`count = 0`; `-1` would mean all).
pub fn encode_metadata_request(correlation_id: i32) -> Vec<u8> {
    frame(METADATA, 1, correlation_id, &0_i32.to_be_bytes())
}

/// Reads a Metadata v1 response body up to the controller id (the topic list that
/// follows is empty: none was asked for).
pub fn decode_metadata_response(correlation_id: i32, body: &[u8]) -> anyhow::Result<ClusterView> {
    let mut input = Input(body);
    let echoed = input.i32()?;
    ensure!(
        echoed == correlation_id,
        "the correlation id {echoed} is not ours ({correlation_id}): not the Kafka protocol"
    );
    let count = input.i32()?;
    let count = usize::try_from(count)
        .ok()
        .filter(|n| *n <= 1024)
        .with_context(|| format!("implausible broker count {count}"))?;
    let mut brokers = Vec::with_capacity(count);
    for _ in 0..count {
        let node_id = input.i32()?;
        let host = input.string()?.context("a broker without a host")?;
        let port = input.i32()?;
        let _rack = input.string()?;
        brokers.push(Broker {
            node_id,
            host,
            port: u16::try_from(port).with_context(|| format!("broker port {port}"))?,
        });
    }
    let controller_id = input.i32()?;
    Ok(ClusterView {
        brokers,
        controller_id,
    })
}

/// Reads an ApiVersions v0 response body (the bytes after the size prefix).
pub fn decode_response(correlation_id: i32, body: &[u8]) -> anyhow::Result<Vec<ApiVersion>> {
    let mut input = Input(body);
    let echoed = input.i32()?;
    ensure!(
        echoed == correlation_id,
        "the correlation id {echoed} is not ours ({correlation_id}): not the Kafka protocol"
    );
    let error_code = input.i16()?;
    ensure!(
        error_code == 0,
        "the broker answered with error code {error_code}"
    );
    let count = input.i32()?;
    let count = usize::try_from(count)
        .ok()
        .with_context(|| format!("negative API count {count}"))?;
    ensure!(
        input.0.len() == count * 6,
        "{count} APIs take {} bytes, but {} follow: not an ApiVersions v0 response",
        count * 6,
        input.0.len()
    );
    let mut apis = Vec::with_capacity(count);
    for _ in 0..count {
        apis.push(ApiVersion {
            api_key: input.i16()?,
            min_version: input.i16()?,
            max_version: input.i16()?,
        });
    }
    ensure!(
        apis.iter().any(|api| api.api_key == API_VERSIONS),
        "the broker does not list ApiVersions itself among its {count} APIs"
    );
    Ok(apis)
}

/// The unread rest of a response (also for [`super::topics`] and the tests that
/// create topics with it).
#[derive(Debug)]
pub struct Input<'a>(pub &'a [u8]);

impl Input<'_> {
    fn take<const N: usize>(&mut self) -> anyhow::Result<[u8; N]> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .context("the response ends early")?;
        self.0 = rest;
        Ok(*head)
    }

    pub fn i16(&mut self) -> anyhow::Result<i16> {
        self.take().map(i16::from_be_bytes)
    }

    pub fn i32(&mut self) -> anyhow::Result<i32> {
        self.take().map(i32::from_be_bytes)
    }

    /// An array's length (a response lists at most a few thousand things).
    pub fn count(&mut self) -> anyhow::Result<usize> {
        let count = self.i32()?;
        usize::try_from(count)
            .ok()
            .filter(|n| *n <= 100_000)
            .with_context(|| format!("implausible array length {count}"))
    }

    /// A nullable string: length `-1` is null.
    pub fn string(&mut self) -> anyhow::Result<Option<String>> {
        let len = self.i16()?;
        let Ok(len) = usize::try_from(len) else {
            return Ok(None);
        };
        ensure!(self.0.len() >= len, "the response ends inside a string");
        let (text, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(Some(
            String::from_utf8(text.to_vec()).context("a string that is not UTF-8")?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn the_request_is_framed_as_the_protocol_says() {
        let frame = encode_request(0x0102_0304);
        let mut expected = vec![0, 0, 0, 26]; // size: 2 + 2 + 4 + 2 + 16
        expected.extend_from_slice(&[0, 18, 0, 0, 1, 2, 3, 4, 0, 16]);
        expected.extend_from_slice(b"ferriseats-xtask");
        assert_eq!(frame, expected);
    }

    /// An ApiVersions v0 response body listing `apis`.
    fn response(correlation_id: i32, error_code: i16, apis: &[(i16, i16, i16)]) -> Vec<u8> {
        let mut body = correlation_id.to_be_bytes().to_vec();
        body.extend_from_slice(&error_code.to_be_bytes());
        body.extend_from_slice(&(apis.len() as i32).to_be_bytes());
        for (key, min, max) in apis {
            for n in [key, min, max] {
                body.extend_from_slice(&n.to_be_bytes());
            }
        }
        body
    }

    const BROKER_APIS: &[(i16, i16, i16)] = &[(0, 0, 11), (1, 0, 16), (18, 0, 4)];

    #[test]
    fn a_well_formed_response_is_decoded() {
        let apis = decode_response(7, &response(7, 0, BROKER_APIS)).unwrap();
        assert_eq!(apis.len(), 3);
        assert_eq!(
            apis[1],
            ApiVersion {
                api_key: 1,
                min_version: 0,
                max_version: 16
            }
        );
    }

    #[test]
    fn malformed_responses_are_rejected() {
        let wrong_id = decode_response(7, &response(8, 0, BROKER_APIS));
        assert!(format!("{:#}", wrong_id.unwrap_err()).contains("correlation id"));
        let error = decode_response(7, &response(7, 35, BROKER_APIS));
        assert!(format!("{:#}", error.unwrap_err()).contains("error code 35"));
        let mut truncated = response(7, 0, BROKER_APIS);
        truncated.pop();
        assert!(decode_response(7, &truncated).is_err());
        let mut trailing = response(7, 0, BROKER_APIS);
        trailing.push(0);
        assert!(decode_response(7, &trailing).is_err());
        assert!(decode_response(7, &response(7, 0, &[(0, 0, 11)])).is_err());
    }

    /// A one-connection server that reads the request and answers what `answer`
    /// makes of it.
    fn fake_server(answer: fn(&[u8]) -> Vec<u8>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = [0; 30];
            if conn.read_exact(&mut request).is_ok() {
                let _ = conn.write_all(&answer(&request));
            }
        });
        addr
    }

    #[test]
    fn a_broker_is_recognised_over_tcp() {
        let addr = fake_server(|request| {
            let correlation_id = i32::from_be_bytes(request[8..12].try_into().unwrap());
            let body = response(correlation_id, 0, BROKER_APIS);
            [(body.len() as i32).to_be_bytes().to_vec(), body].concat()
        });
        let apis = api_versions(&addr, Duration::from_secs(5)).unwrap();
        assert_eq!(apis.len(), 3);
    }

    #[test]
    fn another_protocol_is_not_kafka() {
        let addr = fake_server(|_| b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec());
        let err = api_versions(&addr, Duration::from_secs(5)).unwrap_err();
        assert!(format!("{err:#}").contains("not"), "{err:#}");
    }

    #[test]
    fn the_metadata_request_asks_for_no_topic() {
        let frame = encode_metadata_request(9);
        assert_eq!(&frame[4..8], &[0, 3, 0, 1]); // Metadata, v1
        assert_eq!(&frame[frame.len() - 4..], &[0, 0, 0, 0]); // topics: count 0
        assert_eq!(frame.len(), 4 + 2 + 2 + 4 + 2 + 16 + 4);
    }

    /// A Metadata v1 response body listing `brokers` as (id, host, port).
    fn metadata_body(
        correlation_id: i32,
        brokers: &[(i32, &str, i32)],
        controller: i32,
    ) -> Vec<u8> {
        let mut body = correlation_id.to_be_bytes().to_vec();
        body.extend_from_slice(&(brokers.len() as i32).to_be_bytes());
        for (id, host, port) in brokers {
            body.extend_from_slice(&id.to_be_bytes());
            body.extend_from_slice(&(host.len() as i16).to_be_bytes());
            body.extend_from_slice(host.as_bytes());
            body.extend_from_slice(&port.to_be_bytes());
            body.extend_from_slice(&(-1_i16).to_be_bytes()); // rack: null
        }
        body.extend_from_slice(&controller.to_be_bytes());
        body.extend_from_slice(&0_i32.to_be_bytes()); // topics
        body
    }

    #[test]
    fn a_metadata_response_lists_the_brokers_and_the_controller() {
        let body = metadata_body(5, &[(1, "127.0.0.1", 9092), (2, "127.0.0.1", 9093)], 2);
        let view = decode_metadata_response(5, &body).unwrap();
        assert_eq!(view.controller_id, 2);
        assert_eq!(
            view.brokers[1],
            Broker {
                node_id: 2,
                host: "127.0.0.1".to_owned(),
                port: 9093
            }
        );
        assert!(
            decode_metadata_response(6, &body).is_err(),
            "not our correlation id"
        );
        assert!(
            decode_metadata_response(5, &body[..20]).is_err(),
            "truncated"
        );
    }

    #[test]
    fn a_closed_port_is_an_error() {
        let addr = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().to_string()
        };
        assert!(api_versions(&addr, Duration::from_secs(2)).is_err());
    }
}
