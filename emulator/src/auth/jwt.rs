//! Entra ID access tokens (`jwt`) on `$cbs`: the checks an emulator can make.
//!
//! Checked, as Service Bus checks them:
//! - the form: three base64url parts, a JSON header naming a signing algorithm (`alg`; `none` is
//!   refused: Entra ID never issues unsigned tokens) and a JSON object of claims;
//! - the lifetime: `exp` (required) is later than now, `nbf` (when present) is not;
//! - the audience `aud` (a string or an array): Service Bus's Entra resource `https://servicebus.azure.net`
//!   with or without its trailing slash (the worker and `azure_identity` ask for the scope
//!   `https://servicebus.azure.net/.default`, the Python SDK for `https://servicebus.azure.net//.default`,
//!   whose token says `https://servicebus.azure.net/`; also the national-cloud twins, `.chinacloudapi.cn`
//!   and `.usgovcloudapi.net`), or the namespace itself (`https://<namespace>/`, or `sb://<namespace>/<path>`
//!   covering the entity) as named by the put-token's `name`.
//!
//! **Not** checked, because an emulator cannot: the signature (Entra ID signs with per-tenant keys
//! published online, and the emulator has no tenant), the issuer (`iss`, `tid`), and role assignments
//! (Azure Service Bus Data Sender/Receiver). Any well-formed, unexpired token with a Service Bus
//! audience is accepted for the entity it is put for: do not expose the emulator where that matters.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use super::audience_covers;

/// Service Bus's Entra ID resource (application ID URI) in the public cloud, and in the national
/// clouds (Microsoft's "Authenticate an application with Microsoft Entra ID to access Service Bus
/// entities", global and Azure China editions). Compared without a trailing slash, ignoring case.
pub const SERVICE_BUS_RESOURCES: [&str; 3] = [
    "https://servicebus.azure.net",
    "https://servicebus.chinacloudapi.cn",
    "https://servicebus.usgovcloudapi.net",
];

/// The scope a client asks Entra ID for, named in error fixes.
const SCOPE: &str = "https://servicebus.azure.net/.default";

/// What an accepted token says (for the log; the grant itself is the put-token's `name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtClaims {
    /// The `aud` value that matched.
    pub audience: String,
    pub expires: SystemTime,
    /// `oid` (the identity's object id), else `sub`.
    pub principal: Option<String>,
    /// `appid` (v1 tokens), else `azp` (v2): the client application, e.g. a managed identity's client id.
    pub app_id: Option<String>,
}

/// Why a `jwt` token was refused. Each says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("malformed JWT: {0}")]
    Malformed(String),
    #[error(
        "the JWT is unsigned (alg \"none\" or an empty signature); Entra ID never issues those, so Service Bus refuses them"
    )]
    Unsigned,
    #[error("the JWT has no exp (expiry) claim; Service Bus only takes tokens that expire")]
    NoExpiry,
    #[error(
        "the JWT expired at {} (exp, unix seconds); get a fresh token from the identity and put it again before the old one runs out",
        unix(.0)
    )]
    Expired(SystemTime),
    #[error(
        "the JWT is not valid before {} (nbf, unix seconds); check the clocks of the token issuer and the emulator",
        unix(.0)
    )]
    NotYetValid(SystemTime),
    #[error(
        "the JWT has no aud (audience) claim; request the token for the scope {SCOPE} (resource https://servicebus.azure.net)"
    )]
    NoAudience,
    #[error(
        "the JWT's audience (aud) is {found}, which is neither Service Bus nor the namespace of '{name}'; request the token for the scope {SCOPE} (resource https://servicebus.azure.net), not for another service"
    )]
    WrongAudience { found: String, name: String },
}

fn unix(at: &SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[derive(Deserialize)]
struct Header {
    alg: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    aud: Option<OneOrMany>,
    exp: Option<f64>,
    nbf: Option<f64>,
    oid: Option<String>,
    sub: Option<String>,
    appid: Option<String>,
    azp: Option<String>,
}

/// `aud` is a string or an array of strings (RFC 7519 §4.1.3).
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn values(&self) -> &[String] {
        match self {
            OneOrMany::One(one) => std::slice::from_ref(one),
            OneOrMany::Many(many) => many,
        }
    }
}

/// Checks `token` as put for `name` (the put-token's `name`, `sb://<namespace>/<entity>`) at `now`.
pub fn validate(token: &str, name: &str, now: SystemTime) -> Result<JwtClaims, JwtError> {
    let parts: Vec<&str> = token.trim().split('.').collect();
    let [header, claims, signature] = parts[..] else {
        return Err(JwtError::Malformed(format!(
            "it has {} part(s) separated by '.', not three (header.claims.signature)",
            parts.len()
        )));
    };
    let header: Header = decode_json(header, "header")?;
    match header.alg.as_deref() {
        None => return Err(JwtError::Malformed("the header has no alg".into())),
        Some(alg) if alg.eq_ignore_ascii_case("none") => return Err(JwtError::Unsigned),
        Some(_) => {}
    }
    if signature.is_empty() {
        return Err(JwtError::Unsigned);
    }
    decode(signature, "signature")?;
    let claims: Claims = decode_json(claims, "claims")?;

    let expires = numeric_date(claims.exp.ok_or(JwtError::NoExpiry)?, "exp")?;
    if expires <= now {
        return Err(JwtError::Expired(expires));
    }
    if let Some(nbf) = claims.nbf {
        let not_before = numeric_date(nbf, "nbf")?;
        if not_before > now {
            return Err(JwtError::NotYetValid(not_before));
        }
    }
    let audiences = claims.aud.as_ref().ok_or(JwtError::NoAudience)?.values();
    let audience = audiences
        .iter()
        .find(|aud| audience_matches(aud, name))
        .ok_or_else(|| JwtError::WrongAudience {
            found: audiences.join(", "),
            name: name.to_string(),
        })?
        .clone();
    Ok(JwtClaims {
        audience,
        expires,
        principal: claims.oid.or(claims.sub),
        app_id: claims.appid.or(claims.azp),
    })
}

/// Service Bus's resource, or the namespace of `name` (and, if the audience has a path, one that
/// covers the entity).
fn audience_matches(aud: &str, name: &str) -> bool {
    let bare = aud.trim().trim_end_matches('/');
    if SERVICE_BUS_RESOURCES
        .iter()
        .any(|resource| resource.eq_ignore_ascii_case(bare))
    {
        return true;
    }
    let (Some((scheme, rest)), Some((_, name_rest))) =
        (aud.split_once("://"), name.split_once("://"))
    else {
        return false;
    };
    let host = |rest: &str| rest.split('/').next().unwrap_or_default().to_string();
    let namespace = host(name_rest);
    (scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("sb"))
        && !namespace.is_empty()
        && host(rest).eq_ignore_ascii_case(&namespace)
        && audience_covers(aud, name)
}

fn decode(part: &str, what: &str) -> Result<Vec<u8>, JwtError> {
    // Entra ID omits the padding, as RFC 7515 says; tolerate it anyway.
    URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|e| JwtError::Malformed(format!("the {what} is not base64url: {e}")))
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str, what: &str) -> Result<T, JwtError> {
    serde_json::from_slice(&decode(part, what)?).map_err(|e| {
        JwtError::Malformed(format!("the {what} is not the expected JSON object: {e}"))
    })
}

fn numeric_date(seconds: f64, claim: &str) -> Result<SystemTime, JwtError> {
    Duration::try_from_secs_f64(seconds)
        .ok()
        .and_then(|d| UNIX_EPOCH.checked_add(d))
        .ok_or_else(|| {
            JwtError::Malformed(format!("{claim} is {seconds}, not a date in unix seconds"))
        })
}

/// A token shaped like the ones Entra ID issues to a managed identity for Service Bus, for tests of
/// clients that fake an identity endpoint: RS256 header, `aud`, `exp`, `nbf`, `oid`, `appid`, and a
/// signature that is only a placeholder (nothing can check it offline; see the module docs).
pub fn make_test_token(audience: &str, expires: SystemTime) -> String {
    let exp = unix(&expires);
    let header = serde_json::json!({ "alg": "RS256", "typ": "JWT" });
    let claims = serde_json::json!({
        "aud": audience,
        "iss": "https://sts.windows.net/00000000-0000-0000-0000-000000000000/",
        "nbf": exp.saturating_sub(24 * 3600),
        "exp": exp,
        "oid": "00000000-0000-0000-0000-0000000000a1",
        "appid": "00000000-0000-0000-0000-0000000000c1",
    });
    let encode = |value: &serde_json::Value| URL_SAFE_NO_PAD.encode(value.to_string());
    format!(
        "{}.{}.{}",
        encode(&header),
        encode(&claims),
        URL_SAFE_NO_PAD.encode(b"placeholder: not signed by Entra ID")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: &str = "sb://mylab.servicebus.windows.net/queue-messages";

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn token(header: serde_json::Value, claims: serde_json::Value) -> String {
        let encode = |v: &serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.c2ln", encode(&header), encode(&claims))
    }

    fn rs256() -> serde_json::Value {
        serde_json::json!({"alg": "RS256", "typ": "JWT"})
    }

    #[test]
    fn a_managed_identity_token_for_service_bus_is_accepted_until_it_expires() {
        let t = make_test_token("https://servicebus.azure.net", at(2_000_000));
        let claims = validate(&t, NAME, at(1_999_999)).unwrap();
        assert_eq!(claims.audience, "https://servicebus.azure.net");
        assert_eq!(claims.expires, at(2_000_000));
        assert_eq!(
            claims.principal.as_deref(),
            Some("00000000-0000-0000-0000-0000000000a1")
        );
        assert_eq!(
            claims.app_id.as_deref(),
            Some("00000000-0000-0000-0000-0000000000c1")
        );
        assert_eq!(
            validate(&t, NAME, at(2_000_000)),
            Err(JwtError::Expired(at(2_000_000)))
        );
    }

    #[test]
    fn service_bus_audiences_and_the_namespace_match_other_services_do_not() {
        let accepted = [
            "https://servicebus.azure.net/",
            "HTTPS://ServiceBus.Azure.Net",
            "https://servicebus.chinacloudapi.cn",
            "https://servicebus.usgovcloudapi.net/",
            "https://mylab.servicebus.windows.net/",
            "sb://mylab.servicebus.windows.net/queue-messages",
        ];
        for aud in accepted {
            let t = make_test_token(aud, at(10));
            assert!(validate(&t, NAME, at(5)).is_ok(), "{aud}");
        }
        let refused = [
            "https://management.azure.com",
            "https://eventhubs.azure.net",
            "https://other.servicebus.windows.net/",
            "sb://mylab.servicebus.windows.net/another-queue",
            "servicebus.azure.net",
        ];
        for aud in refused {
            let t = make_test_token(aud, at(10));
            let e = validate(&t, NAME, at(5)).unwrap_err();
            assert!(
                matches!(e, JwtError::WrongAudience { ref found, .. } if found == aud),
                "{aud}: {e}"
            );
            assert!(
                e.to_string()
                    .contains("https://servicebus.azure.net/.default")
            );
        }
        // An array of audiences matches when one of them does.
        let t = token(
            rs256(),
            serde_json::json!({"aud": ["https://graph.microsoft.com", "https://servicebus.azure.net"], "exp": 10}),
        );
        assert!(validate(&t, NAME, at(5)).is_ok());
    }

    #[test]
    fn lifetime_claims_are_enforced() {
        let no_exp = token(
            rs256(),
            serde_json::json!({"aud": SERVICE_BUS_RESOURCES[0]}),
        );
        assert_eq!(validate(&no_exp, NAME, at(5)), Err(JwtError::NoExpiry));
        let early = token(
            rs256(),
            serde_json::json!({"aud": SERVICE_BUS_RESOURCES[0], "exp": 100, "nbf": 50}),
        );
        assert_eq!(
            validate(&early, NAME, at(49)),
            Err(JwtError::NotYetValid(at(50)))
        );
        assert!(validate(&early, NAME, at(50)).is_ok());
        let no_aud = token(rs256(), serde_json::json!({"exp": 100}));
        assert_eq!(validate(&no_aud, NAME, at(5)), Err(JwtError::NoAudience));
    }

    #[test]
    fn malformed_and_unsigned_tokens_say_what_is_wrong() {
        let claims = serde_json::json!({"aud": SERVICE_BUS_RESOURCES[0], "exp": 100});
        let good = token(rs256(), claims.clone());
        let unsigned = token(serde_json::json!({"alg": "none"}), claims.clone());
        assert_eq!(validate(&unsigned, NAME, at(5)), Err(JwtError::Unsigned));
        let (head, _) = good.rsplit_once('.').unwrap();
        assert_eq!(
            validate(&format!("{head}."), NAME, at(5)),
            Err(JwtError::Unsigned)
        );
        let cases = [
            ("SharedAccessSignature sr=a".to_string(), "not three"),
            ("a.b.c.d".to_string(), "not three"),
            (
                format!("!!.{}", &good[good.find('.').unwrap() + 1..]),
                "header is not base64url",
            ),
            (
                token(serde_json::json!({"typ": "JWT"}), claims.clone()),
                "no alg",
            ),
            (
                token(rs256(), serde_json::json!(["not", "an", "object"])),
                "claims is not the expected JSON object",
            ),
            (
                token(rs256(), serde_json::json!({"aud": 7, "exp": 100})),
                "claims is not the expected JSON object",
            ),
            (
                token(
                    rs256(),
                    serde_json::json!({"aud": "https://servicebus.azure.net", "exp": -1}),
                ),
                "not a date",
            ),
        ];
        for (t, expected) in cases {
            let e = validate(&t, NAME, at(5)).unwrap_err().to_string();
            assert!(e.contains(expected), "{t}: {e}");
        }
    }
}
