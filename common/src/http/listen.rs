//! Binding a listening port, with an error a newcomer can act on.
//!
//! The most common first-hour failure is a port already taken — usually by the phase
//! started an hour ago in another terminal, since every phase's API listens on 3000.
//! The OS says "Address already in use (os error 98)"; this says which service could
//! not start, what probably holds the port, how to find it, and which flag moves it,
//! in one line.

use std::io::ErrorKind;
use std::net::SocketAddr;
use tokio::net::TcpListener;

/// Binds `addr` for `what` (e.g. "the order API"); `flag` is the option that moves it.
pub async fn listen(addr: SocketAddr, what: &str, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|err| bind_error(&err, addr, what, flag))
}

/// The one-line explanation of a failed bind (for services that bind their own way).
pub fn bind_error(err: &std::io::Error, addr: SocketAddr, what: &str, flag: &str) -> anyhow::Error {
    let port = addr.port();
    match err.kind() {
        ErrorKind::AddrInUse => anyhow::anyhow!(
            "{addr} is already in use, so {what} cannot listen there: another FerrisEats \
             phase is probably still running (stop it with Ctrl-C, or find it with \
             `ss -ltnp 'sport = :{port}'`), or pass {flag} with a free address"
        ),
        ErrorKind::PermissionDenied => anyhow::anyhow!(
            "not allowed to listen on {addr} for {what} (ports below 1024 need root): \
             pass {flag} with a port above 1024"
        ),
        ErrorKind::AddrNotAvailable => anyhow::anyhow!(
            "{addr} is not an address of this machine, so {what} cannot listen there: \
             pass {flag} with 127.0.0.1:{port} (or 0.0.0.0:{port} for every interface)"
        ),
        _ => anyhow::anyhow!("cannot listen on {addr} for {what}: {err} (pass {flag} to move it)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_port_in_use_is_explained_in_one_line_with_the_fix() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let err = listen(addr, "the order API", "--addr").await.unwrap_err();
        let message = format!("{err:#}");
        assert!(!message.contains('\n'), "one line: {message}");
        for expected in [
            &addr.to_string(),
            "already in use",
            "the order API",
            &format!("ss -ltnp 'sport = :{}'", addr.port()),
            "--addr",
        ] {
            assert!(
                message.contains(expected),
                "{expected:?} missing from: {message}"
            );
        }
        drop(taken);
        assert!(listen(addr, "the order API", "--addr").await.is_ok());
    }

    #[tokio::test]
    async fn an_address_of_another_machine_is_explained() {
        let addr: SocketAddr = "192.0.2.1:3000".parse().unwrap(); // TEST-NET-1, never local
        let message = format!(
            "{:#}",
            listen(addr, "the order API", "--addr").await.unwrap_err()
        );
        assert!(
            message.contains("not an address of this machine") && message.contains("--addr"),
            "{message}"
        );
    }
}
