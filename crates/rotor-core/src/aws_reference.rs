//! AWS references: Secrets Manager secrets and SSM parameters named by ARN, as Bank-Vaults'
//! secret-init writes them, plus a `#KEY` selector and a version pin.
//!
//! ```text
//! arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME          the whole SecretString
//! arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME#KEY      KEY of a JSON SecretString
//! arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME#KEY#PIN  at a version stage or version id
//! arn:aws:ssm:REGION:ACCOUNT:parameter/NAME[#KEY[#PIN]]      a parameter (PIN: version or label)
//! ```
//!
//! `KEY` may be empty before a pin (`NAME##AWSPREVIOUS`: the whole value at a stage). The
//! partitions `aws`, `aws-cn` and `aws-us-gov` are accepted. There is no short form: the ARN
//! carries the region (where the request goes and what it is signed for) and the account
//! (what a namespace's tenancy rules match), and a name alone would leave both to a setting.

/// The AWS service a reference reads from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AwsService {
    SecretsManager,
    Ssm,
}

impl AwsService {
    /// The service's name in endpoints and in SigV4 scopes.
    pub fn endpoint_name(self) -> &'static str {
        match self {
            Self::SecretsManager => "secretsmanager",
            Self::Ssm => "ssm",
        }
    }

    /// What a user calls it, for messages.
    pub fn title(self) -> &'static str {
        match self {
            Self::SecretsManager => "Secrets Manager",
            Self::Ssm => "SSM Parameter Store",
        }
    }
}

/// The parts of a Secrets Manager or SSM parameter ARN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsArn<'a> {
    pub partition: &'a str,
    pub service: AwsService,
    pub region: &'a str,
    pub account: &'a str,
    /// The secret's name (Secrets Manager) or what follows `parameter/` (SSM).
    pub name: &'a str,
}

impl AwsArn<'_> {
    /// The SSM parameter's name as the API takes it: a hierarchical name (one with `/`) begins
    /// with `/`, which the ARN drops (`parameter/app/db` names `/app/db`).
    pub fn parameter_name(&self) -> String {
        if self.name.contains('/') {
            format!("/{}", self.name)
        } else {
            self.name.to_string()
        }
    }
}

const PARTITIONS: [&str; 3] = ["aws", "aws-cn", "aws-us-gov"];

/// Whether `text` starts like an AWS reference rotor reads: `arn:PARTITION:secretsmanager:R:A:secret:`
/// or `arn:PARTITION:ssm:R:A:parameter/` (other ARNs, such as a role's, are plain text). Cheap:
/// looks at the first few fields only. The chart's CEL says the same (`rotor.cel.awsAttempt`).
pub fn aws_attempt(text: &str) -> bool {
    let Some(rest) = text.strip_prefix("arn:") else {
        return false;
    };
    let mut fields = rest.splitn(6, ':');
    let (Some(partition), Some(service), Some(region), Some(account), Some(resource)) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return false;
    };
    let plain_field = |f: &str| !f.contains(['#', '/']);
    if !PARTITIONS.contains(&partition) || !plain_field(region) || !plain_field(account) {
        return false;
    }
    match service {
        "secretsmanager" => resource == "secret" && fields.next().is_some(),
        "ssm" => resource.starts_with("parameter/"),
        _ => false,
    }
}

/// Parses an ARN that [`aws_attempt`] accepted; the problem otherwise, with the fix.
pub fn parse_arn(arn: &str) -> Result<AwsArn<'_>, String> {
    let rest = arn
        .strip_prefix("arn:")
        .ok_or("it does not start with arn:")?;
    let fields: Vec<&str> = rest.splitn(6, ':').collect();
    let [partition, service, region, account, resource, tail @ ..] = fields.as_slice() else {
        return Err("an ARN has six ':'-separated fields".to_string());
    };
    if !PARTITIONS.contains(partition) {
        return Err(format!(
            "the partition {partition:?} is not aws, aws-cn or aws-us-gov"
        ));
    }
    if !is_region(region) {
        return Err(format!(
            "the region {region:?} is not a region name such as us-east-1"
        ));
    }
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "the account {account:?} is not a 12-digit AWS account id"
        ));
    }
    let (service, name) = match (*service, *resource, tail) {
        ("secretsmanager", "secret", [name]) => (AwsService::SecretsManager, *name),
        ("ssm", parameter, []) if parameter.starts_with("parameter/") => {
            (AwsService::Ssm, &parameter["parameter/".len()..])
        }
        _ => {
            return Err(
                "only Secrets Manager secrets (…:secret:NAME) and SSM parameters (…:parameter/NAME) are read"
                    .to_string(),
            );
        }
    };
    name_problem(service, name).map_or(Ok(()), Err)?;
    Ok(AwsArn {
        partition,
        service,
        region,
        account,
        name,
    })
}

/// The longest name either service allows (SSM: 2048 with the path; Secrets Manager: 512 with
/// the ARN's random suffix).
const MAX_NAME_BYTES: usize = 2048;

fn name_problem(service: AwsService, name: &str) -> Option<String> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Some(format!(
            "the name is empty or longer than {MAX_NAME_BYTES} bytes"
        ));
    }
    let allowed = |c: char| match service {
        AwsService::SecretsManager => c.is_ascii_alphanumeric() || "/_+=.@-".contains(c),
        AwsService::Ssm => c.is_ascii_alphanumeric() || "/_.-".contains(c),
    };
    if let Some(c) = name.chars().find(|c| !allowed(*c)) {
        return Some(format!(
            "the name holds {c:?}, which {} names never contain",
            service.title()
        ));
    }
    if name.split('/').any(|s| s == "." || s == "..") || name.contains("//") {
        return Some("the name has an empty, '.' or '..' segment".to_string());
    }
    None
}

/// A version pin's problem, if any: a Secrets Manager stage label or version id, an SSM version
/// number or label (letters, digits, `.`, `_`, `-`; at most 100 bytes).
pub fn pin_problem(pin: &str) -> Option<String> {
    let ok = !pin.is_empty()
        && pin.len() <= 100
        && pin
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    (!ok).then(|| {
        format!("the pin {pin:?} after the second '#' is not a version stage, version id, version number or label")
    })
}

/// Whether `region` is a region name (`us-east-1`): lower-case letters, digits and `-`, at most
/// 32 bytes; it becomes part of a host name, so nothing else is accepted.
pub fn is_region(region: &str) -> bool {
    !region.is_empty()
        && region.len() <= 32
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_are_secrets_and_parameters_only() {
        for yes in [
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:db",
            "arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:db-AbCdEf#password",
            "arn:aws:ssm:eu-west-1:123456789012:parameter/app/db",
            "arn:aws:ssm:eu-west-1:bad:parameter/x",
        ] {
            assert!(aws_attempt(yes), "{yes}");
        }
        for no in [
            "arn:aws:iam::123456789012:role/app",
            "arn:aws:ssm:us-east-1:123456789012:document/x",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret",
            "arn:aws:s3:::bucket",
            "arn:other:ssm:us-east-1:123456789012:parameter/x",
            "aws:secretsmanager",
            "",
        ] {
            assert!(!aws_attempt(no), "{no}");
        }
    }

    #[test]
    fn arns_parse_into_their_parts_and_bad_ones_name_the_field() {
        let a =
            parse_arn("arn:aws:secretsmanager:us-east-1:123456789012:secret:team/db-AbC").unwrap();
        assert_eq!(
            (a.service, a.region, a.account, a.name),
            (
                AwsService::SecretsManager,
                "us-east-1",
                "123456789012",
                "team/db-AbC"
            )
        );
        let p = parse_arn("arn:aws:ssm:eu-west-1:123456789012:parameter/app/db").unwrap();
        assert_eq!((p.service, p.name), (AwsService::Ssm, "app/db"));
        for (bad, says) in [
            ("arn:aws:ssm:eu-west-1:12345:parameter/x", "12-digit"),
            ("arn:aws:ssm:EU:123456789012:parameter/x", "region"),
            ("arn:aws:ssm:eu-west-1:123456789012:parameter/", "empty"),
            ("arn:aws:ssm:eu-west-1:123456789012:parameter/a b", "holds"),
            (
                "arn:aws:ssm:eu-west-1:123456789012:parameter/a/../b",
                "'..'",
            ),
            (
                "arn:aws:secretsmanager:eu-west-1:123456789012:secret:a:b",
                "':'",
            ),
            ("arn:aws:ssm:eu-west-1:123456789012:parameters/x", "only"),
        ] {
            let e = parse_arn(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn pins_are_labels_ids_or_numbers() {
        for ok in [
            "AWSPREVIOUS",
            "3",
            "a1b2c3d4-5678-90ab-cdef-EXAMPLE11111",
            "prod_v2",
        ] {
            assert!(pin_problem(ok).is_none(), "{ok}");
        }
        for bad in ["", "a b", "x/y", &"x".repeat(101)] {
            assert!(pin_problem(bad).is_some(), "{bad}");
        }
    }
}
