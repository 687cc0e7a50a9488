//! AWS Signature Version 4 for the requests rotor makes (JSON and query APIs over POST/GET).
//! Pure: the time is an argument, so the signature is checked against AWS's published example.

use std::time::{SystemTime, UNIX_EPOCH};

use ring::{digest, hmac};

/// Temporary credentials (STS, Pod Identity). `Debug` never shows the secret or the token.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    /// When they stop working (seconds since the epoch), when the issuer said.
    pub expires_at: Option<u64>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// What is signed: the method, the path (already URI-encoded, `/` for the APIs rotor calls), the
/// query (already canonical: sorted, encoded), the headers (lowercase names) and the body.
pub struct Signable<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
    pub region: &'a str,
    pub service: &'a str,
}

/// The headers to add to the request: `x-amz-date`, `x-amz-security-token` (with a session
/// token), `x-amz-content-sha256` is not needed outside S3, and `authorization`.
pub fn sign(request: &Signable<'_>, creds: &Credentials, now: SystemTime) -> Vec<(String, String)> {
    let amz_date = amz_date(now);
    let date = &amz_date[..8];
    let mut headers: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    headers.push(("x-amz-date".to_string(), amz_date.clone()));
    if let Some(token) = &creds.session_token {
        headers.push(("x-amz-security-token".to_string(), token.clone()));
    }
    headers.sort();
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed_headers = headers
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical_request = format!(
        "{}\n{}\n{}\n{canonical_headers}\n{signed_headers}\n{}",
        request.method,
        request.path,
        request.query,
        hex(digest::digest(&digest::SHA256, request.body).as_ref())
    );
    let scope = format!("{date}/{}/{}/aws4_request", request.region, request.service);
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(digest::digest(&digest::SHA256, canonical_request.as_bytes()).as_ref())
    );
    let key = [date, request.region, request.service, "aws4_request"]
        .iter()
        .fold(
            format!("AWS4{}", creds.secret_access_key).into_bytes(),
            |key, part| mac(&key, part.as_bytes()),
        );
    let signature = hex(&mac(&key, string_to_sign.as_bytes()));
    let mut out = vec![("x-amz-date".to_string(), amz_date)];
    if let Some(token) = &creds.session_token {
        out.push(("x-amz-security-token".to_string(), token.clone()));
    }
    out.push((
        "authorization".to_string(),
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            creds.access_key_id
        ),
    ));
    out
}

fn mac(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
        .as_ref()
        .to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `YYYYMMDDTHHMMSSZ` in UTC.
pub fn amz_date(now: SystemTime) -> String {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Seconds since the epoch of an ISO 8601 UTC time (`2026-12-04T05:10:00Z`, fractions ignored),
/// as STS and the Pod Identity agent write expirations.
pub fn parse_utc(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| text.get(r)?.parse::<u64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    Some(days_from_civil(y, m, d)? * 86_400 + hh * 3600 + mm * 60 + ss)
}

// Howard Hinnant's civil calendar algorithms, for years from 1970.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

fn days_from_civil(y: u64, m: u64, d: u64) -> Option<u64> {
    let y = if m <= 2 { y.checked_sub(1)? } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).checked_sub(719_468)
}

/// `application/x-www-form-urlencoded` / SigV4 query encoding: everything but unreserved
/// characters percent-encoded.
pub fn uri_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn example_credentials(token: Option<&str>) -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".to_string(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".to_string(),
            session_token: token.map(str::to_string),
            expires_at: None,
        }
    }

    /// 2015-08-30T12:36:00Z, the time of AWS's SigV4 test suite.
    fn suite_time() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_440_938_160)
    }

    #[test]
    fn the_aws_test_suite_get_vanilla_signature() {
        let headers = sign(
            &Signable {
                method: "GET",
                path: "/",
                query: "",
                headers: &[("host", "example.amazonaws.com")],
                body: b"",
                region: "us-east-1",
                service: "service",
            },
            &example_credentials(None),
            suite_time(),
        );
        let auth = &headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .unwrap()
            .1;
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
        assert!(headers.contains(&("x-amz-date".to_string(), "20150830T123600Z".to_string())));
    }

    /// The same request signed by botocore 1.x (`SigV4Auth.add_auth`), which moto and the AWS
    /// CLI use: a JSON API call with a session token, as rotor-init makes them.
    #[test]
    fn a_json_api_call_signs_as_botocore_signs_it() {
        let at = parse_utc("2026-12-04T04:57:16Z").unwrap();
        let body = br#"{"SecretId":"arn:aws:secretsmanager:eu-west-1:123456789012:secret:db"}"#;
        let headers = sign(
            &Signable {
                method: "POST",
                path: "/",
                query: "",
                headers: &[
                    ("Content-Type", "application/x-amz-json-1.1"),
                    ("X-Amz-Target", "secretsmanager.GetSecretValue"),
                    ("host", "secretsmanager.eu-west-1.amazonaws.com"),
                ],
                body,
                region: "eu-west-1",
                service: "secretsmanager",
            },
            &example_credentials(Some("canary-session-token")),
            UNIX_EPOCH + Duration::from_secs(at),
        );
        let auth = &headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .unwrap()
            .1;
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261204/eu-west-1/secretsmanager/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target, \
             Signature=9380af1d2690856452435d0396d6473dadcfdd61cfaa58145313b2d3a16aa396"
        );
    }

    #[test]
    fn dates_format_and_parse_both_ways() {
        assert_eq!(amz_date(suite_time()), "20150830T123600Z");
        assert_eq!(parse_utc("2015-08-30T12:36:00Z"), Some(1_440_938_160));
        assert_eq!(parse_utc("2015-08-30T12:36:00.123Z"), Some(1_440_938_160));
        assert_eq!(parse_utc("2024-02-29T00:00:00Z"), Some(1_709_164_800));
        assert_eq!(
            amz_date(UNIX_EPOCH + Duration::from_secs(1_709_164_800)),
            "20240229T000000Z"
        );
        for bad in ["", "2015-13-30T12:36:00Z", "yesterday", "2015-08-30"] {
            assert_eq!(parse_utc(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_session_token_is_signed_and_sent_and_debug_shows_no_secret() {
        let creds = example_credentials(Some("canary-session-token"));
        let headers = sign(
            &Signable {
                method: "POST",
                path: "/",
                query: "",
                headers: &[("host", "ssm.us-east-1.amazonaws.com")],
                body: b"{}",
                region: "us-east-1",
                service: "ssm",
            },
            &creds,
            suite_time(),
        );
        let auth = &headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .unwrap()
            .1;
        assert!(
            auth.contains("SignedHeaders=host;x-amz-date;x-amz-security-token"),
            "{auth}"
        );
        assert!(
            headers
                .iter()
                .any(|(k, v)| k == "x-amz-security-token" && v == "canary-session-token")
        );
        let shown = format!("{creds:?}");
        assert!(
            !shown.contains("EXAMPLEKEY") && !shown.contains("canary"),
            "{shown}"
        );
    }

    #[test]
    fn query_encoding_keeps_only_unreserved_characters() {
        assert_eq!(uri_encode("a b/c~d=é"), "a%20b%2Fc~d%3D%C3%A9");
    }
}
