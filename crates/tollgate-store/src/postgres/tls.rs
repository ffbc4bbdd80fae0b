//! TLS to PostgreSQL, chosen by the connection string's `sslmode` as libpq names it.
//!
//! tokio-postgres knows `sslmode=disable|prefer|require` and no `sslrootcert`, so both
//! are taken out of the connection string here and decide:
//!
//! - `disable`, `allow`, `prefer` (the default when none is given): no TLS. libpq's
//!   `prefer` would try TLS without checking whom it talks to, which stops no active
//!   attacker and would make a server with a self-signed certificate fail here.
//! - `require`, `verify-ca`, `verify-full`: TLS, and the server's certificate is
//!   verified, host name included, against the PEM certificates in `sslrootcert` only
//!   (as libpq does), or against the system's roots when `sslrootcert` is absent or
//!   `system`. That is stricter than libpq's `require` and `verify-ca`, which check
//!   less: a connection here is never encrypted to an unknown peer.

use std::str::FromStr;
use std::sync::Arc;

use postgres::config::SslMode;
use postgres::{Client, Config, NoTls};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::StoreError;

/// Connects as the connection string says, over TLS when its `sslmode` asks for it.
pub(super) fn connect(url: &str) -> Result<Client, StoreError> {
    let (config, tls) = parse(url)?;
    match tls {
        None => config.connect(NoTls),
        Some(tls) => config.connect(tls),
    }
    .map_err(super::pg)
}

fn parse(url: &str) -> Result<(Config, Option<MakeRustlsConnect>), StoreError> {
    let (rest, mode, root) = take_tls_params(url);
    let mut config = Config::from_str(&rest).map_err(|e| StoreError::Invalid(format!("the database URL: {e}")))?;
    detect_dead_peers(&mut config);
    let mode = mode.unwrap_or_else(|| match config.get_ssl_mode() {
        SslMode::Require => "require".into(),
        _ => "prefer".into(),
    });
    match mode.as_str() {
        "disable" | "allow" | "prefer" => {
            if root.is_some() {
                return Err(StoreError::Invalid(format!(
                    "the database URL gives sslrootcert with sslmode={mode}, which does not use TLS: add sslmode=verify-full"
                )));
            }
            config.ssl_mode(SslMode::Disable);
            Ok((config, None))
        }
        "require" | "verify-ca" | "verify-full" => {
            config.ssl_mode(SslMode::Require);
            Ok((config, Some(connector(root.as_deref())?)))
        }
        other => Err(StoreError::Invalid(format!(
            "sslmode={other} in the database URL: use disable, prefer, require, verify-ca or verify-full"
        ))),
    }
}

/// Where the connection string leaves them at libpq's defaults, limits that notice a
/// server (or a network) gone without a word within about a minute, not the two hours
/// of the kernel's keepalive default: a writer blocked on a dead connection holds up
/// every write of the node meanwhile. The string's own values are kept.
fn detect_dead_peers(config: &mut Config) {
    use std::time::Duration;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    if config.get_keepalives() && config.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
        config.keepalives_idle(Duration::from_secs(30));
    }
    if config.get_keepalives_interval().is_none() {
        config.keepalives_interval(Duration::from_secs(10));
    }
    if config.get_keepalives_retries().is_none() {
        config.keepalives_retries(3);
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(Duration::from_secs(60));
    }
}

/// Takes `sslmode` and `sslrootcert` out of the connection string (a `postgres://` URL's
/// query, or `key=value` words), returning the rest and the two values. A string
/// without them is returned as it is.
fn take_tls_params(url: &str) -> (String, Option<String>, Option<String>) {
    let (mut mode, mut root) = (None, None);
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else { return (url.to_owned(), None, None) };
        let mut kept = Vec::new();
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            // Percent-decoded as tokio-postgres decodes the rest of the URL (`+` stays a plus).
            let decoded = || percent_encoding::percent_decode_str(value).decode_utf8_lossy().into_owned();
            match key {
                "sslmode" => mode = Some(decoded()),
                "sslrootcert" => root = Some(decoded()),
                _ => kept.push(pair),
            }
        }
        if mode.is_none() && root.is_none() {
            return (url.to_owned(), None, None);
        }
        let rest = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
        return (rest, mode, root);
    }
    // `key=value` words, a value possibly 'quoted' with \' and \\ escapes, as libpq
    // writes them. The other words are kept verbatim, quotes and inner spaces included.
    let mut kept: Vec<&str> = Vec::new();
    let mut chars = url.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut key_end = url.len();
        let mut end = url.len();
        let mut value = String::new();
        while let Some(&(i, c)) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                key_end = i;
                break;
            }
            chars.next();
        }
        if chars.peek().is_some_and(|&(_, c)| c == '=') {
            chars.next();
            if chars.peek().is_some_and(|&(_, c)| c == '\'') {
                chars.next();
                while let Some((_, c)) = chars.next() {
                    match c {
                        '\'' => break,
                        '\\' => value.extend(chars.next().map(|(_, c)| c)),
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(&(_, c)) = chars.peek() {
                    if c.is_whitespace() {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
        }
        if let Some(&(i, _)) = chars.peek() {
            end = i;
        }
        match &url[start..key_end.min(end)] {
            "sslmode" => mode = Some(value),
            "sslrootcert" => root = Some(value),
            _ => kept.push(url[start..end].trim_end()),
        }
    }
    if mode.is_none() && root.is_none() {
        return (url.to_owned(), None, None);
    }
    (kept.join(" "), mode, root)
}

/// rustls verifying the server against the certificates in `root` only, or the
/// system's roots (`None` or `system`), on the aws-lc-rs provider (as the server's HTTPS
/// and the SDK).
fn connector(root: Option<&str>) -> Result<MakeRustlsConnect, StoreError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls_error = |e: rustls::Error| StoreError::Invalid(format!("cannot set up TLS to PostgreSQL: {e}"));
    let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = match root {
        None | Some("system") => {
            Arc::new(rustls_platform_verifier::Verifier::new(provider.clone()).map_err(tls_error)?)
        }
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<_, _>>())
                .map_err(|e| StoreError::Invalid(format!("sslrootcert={path} in the database URL: {e}")))?;
            let mut roots = rustls::RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(StoreError::Invalid(format!(
                    "sslrootcert={path} in the database URL holds no usable PEM certificate (-----BEGIN CERTIFICATE-----)"
                )));
            }
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| StoreError::Invalid(format!("sslrootcert={path} in the database URL: {e}")))?
        }
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .dangerous()
        // Not dangerous: webpki's or the platform's verifier, with the roots above.
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wants_tls(url: &str) -> Result<bool, StoreError> {
        Ok(parse(url)?.1.is_some())
    }

    #[test]
    fn tls_parameters_are_taken_out_and_the_rest_kept() {
        let (rest, mode, root) =
            take_tls_params("postgres://u@h/db?application_name=tg&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem");
        assert_eq!(rest, "postgres://u@h/db?application_name=tg");
        assert_eq!((mode.as_deref(), root.as_deref()), (Some("verify-full"), Some("/etc/ca.pem")));
        assert_eq!(take_tls_params("postgres://u@h/db"), ("postgres://u@h/db".into(), None, None));
        let (rest, mode, root) = take_tls_params("host=h user=u sslmode=require sslrootcert=/ca.pem dbname=d");
        assert_eq!(
            (rest.as_str(), mode.as_deref(), root.as_deref()),
            ("host=h user=u dbname=d", Some("require"), Some("/ca.pem"))
        );
        // A plus is a plus, as in the rest of the URL; strings without the two keys are
        // left alone, inner spaces of quoted values included.
        let (_, _, root) = take_tls_params("postgres://u@h/db?sslmode=verify-full&sslrootcert=/etc/ca+db.pem");
        assert_eq!(root.as_deref(), Some("/etc/ca+db.pem"));
        let untouched = "host=h password='a  b' dbname=d";
        assert_eq!(take_tls_params(untouched), (untouched.to_string(), None, None));
        let (rest, mode, root) =
            take_tls_params(r"host=h  password='it\'s  b' sslmode='verify-full' sslrootcert='/my ca.pem'");
        assert_eq!(
            (rest.as_str(), mode.as_deref(), root.as_deref()),
            (r"host=h password='it\'s  b'", Some("verify-full"), Some("/my ca.pem"))
        );
    }

    #[test]
    fn a_dead_server_is_noticed_within_a_minute_unless_the_url_says_otherwise() {
        use std::time::Duration;
        let (c, _) = parse("postgres://u@h/db").unwrap();
        assert_eq!(c.get_connect_timeout(), Some(&Duration::from_secs(10)));
        assert_eq!(c.get_keepalives_idle(), Duration::from_secs(30));
        assert_eq!((c.get_keepalives_interval(), c.get_keepalives_retries()), (Some(Duration::from_secs(10)), Some(3)));
        assert_eq!(c.get_tcp_user_timeout(), Some(&Duration::from_secs(60)));
        let (c, _) =
            parse("postgres://u@h/db?connect_timeout=3&keepalives_idle=5&tcp_user_timeout=7&keepalives=0").unwrap();
        assert_eq!(c.get_connect_timeout(), Some(&Duration::from_secs(3)));
        assert_eq!(c.get_tcp_user_timeout(), Some(&Duration::from_secs(7)));
        assert!(!c.get_keepalives());
        assert_eq!(c.get_keepalives_idle(), Duration::from_secs(5));
    }

    #[test]
    fn the_mode_decides_whether_to_use_tls() {
        for (url, tls) in [
            ("postgres://u@h/db", false),
            ("postgres://u@h/db?sslmode=prefer", false),
            ("postgres://u@h/db?sslmode=disable", false),
            ("postgres://u@h/db?sslmode=require", true),
            ("postgres://u@h/db?sslmode=verify-full", true),
            ("host=h user=u sslmode=require", true),
        ] {
            assert_eq!(wants_tls(url).unwrap(), tls, "{url}");
        }
        for (url, says) in [
            ("postgres://u@h/db?sslmode=sometimes", "use disable, prefer, require"),
            ("postgres://u@h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem", "/nonexistent/ca.pem"),
            ("postgres://u@h/db?sslrootcert=/ca.pem", "add sslmode=verify-full"),
        ] {
            let e = wants_tls(url).unwrap_err().to_string();
            assert!(e.contains(says), "{url}: {e}");
        }
    }
}
