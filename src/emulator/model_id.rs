//! Which model ids Bedrock refuses before it looks at the body, and with which error.
//!
//! Every operation's `modelId` has a regular expression in the service model; an id that does
//! not match is refused with a `ValidationException` that quotes the pattern. With
//! `strict_models`, an id that matches but names no model is refused too: an ARN (a resource
//! that does not exist) with 404 `ResourceNotFoundException`, any other id with 400
//! `ValidationException` "The provided model identifier is invalid.". Neither message contains
//! the id: Bedrock's do not.

use super::error::ApiError;

/// `InvokeModelIdentifier`, the `modelId` of InvokeModel and InvokeModelWithResponseStream, as
/// the Bedrock Runtime API reference and service model state it.
pub(crate) const INVOKE_PATTERN: &str = r"(arn:aws(-[^:]+)?:bedrock:[a-z0-9-]{1,20}:(([0-9]{12}:custom-model/[a-z0-9-]{1,63}[.]{1}[a-z0-9-]{1,63}/[a-z0-9]{12})|(:foundation-model/[a-z0-9-]{1,63}[.]{1}[a-z0-9-]{1,63}([.:]?[a-z0-9-]{1,63}))|([0-9]{12}:imported-model/[a-z0-9]{12})|([0-9]{12}:provisioned-model/[a-z0-9]{12})|([0-9]{12}:custom-model-deployment/[a-z0-9]{12})|([0-9]{12}:(inference-profile|application-inference-profile)/[a-zA-Z0-9-:.]+)))|([a-z0-9-]{1,63}[.]{1}[a-z0-9-]{1,63}([.:]?[a-z0-9-]{1,63}))|(([0-9a-zA-Z][_-]?)+)|([a-zA-Z0-9-:.]+)$|(^(arn:aws(-[^:]+)?:bedrock:[a-z0-9-]{1,20}:[0-9]{12}:prompt/[0-9a-zA-Z]{10}(?::[0-9]{1,5})?))$|(^arn:aws:sagemaker:[a-z0-9-]+:[0-9]{12}:endpoint/[a-zA-Z0-9-]+$)|(^arn:aws(-[^:]+)?:bedrock:([0-9a-z-]{1,20}):([0-9]{12}):(default-)?prompt-router/[a-zA-Z0-9-:.]+$)";

/// `ConversationalModelId`, the `modelId` of Converse and ConverseStream.
pub(crate) const CONVERSE_PATTERN: &str = r"(arn:aws(-[^:]+)?:bedrock:[a-z0-9-]{1,20}:(([0-9]{12}:custom-model/[a-z0-9-]{1,63}[.]{1}[a-z0-9-]{1,63}/[a-z0-9]{12})|(:foundation-model/[a-z0-9-]{1,63}[.]{1}[a-z0-9-]{1,63}([.:]?[a-z0-9-]{1,63}))|([0-9]{12}:imported-model/[a-z0-9]{12})|([0-9]{12}:provisioned-model/[a-z0-9]{12})|([0-9]{12}:custom-model-deployment/[a-z0-9]{12})|([0-9]{12}:(inference-profile|application-inference-profile)/[a-zA-Z0-9-:.]+)))|([a-z0-9-]{1,63}[.]{1}[a-z0-9-]{1,63}([.:]?[a-z0-9-]{1,63}))|(([0-9a-zA-Z][_-]?)+)|([a-zA-Z0-9-:.]+)|(^(arn:aws(-[^:]+)?:bedrock:[a-z0-9-]{1,20}:[0-9]{12}:prompt/[0-9a-zA-Z]{10}(?::[0-9]{1,5})?))$|(^arn:aws:sagemaker:[a-z0-9-]+:[0-9]{12}:endpoint/[a-zA-Z0-9-]+$)|(^arn:aws(-[^:]+)?:bedrock:([0-9a-z-]{1,20}):([0-9]{12}):(default-)?prompt-router/[a-zA-Z0-9-:.]+$)";

/// The longest `modelId` either pattern allows.
const MAX_LEN: usize = 2048;

/// Refuses an id that breaks `pattern` (one of the two above), with Bedrock's message.
pub(crate) fn check_pattern(id: &str, pattern: &str) -> Result<(), ApiError> {
    let quoted = id.replace('\'', "\\'");
    if id.is_empty() {
        return Err(ApiError::validation(format!(
            "1 validation error detected: Value '{quoted}' at 'modelId' failed to satisfy \
             constraint: Member must have length greater than or equal to 1"
        )));
    }
    if id.len() > MAX_LEN {
        return Err(ApiError::validation(format!(
            "1 validation error detected: Value '{quoted}' at 'modelId' failed to satisfy \
             constraint: Member must have length less than or equal to {MAX_LEN}"
        )));
    }
    if matches_pattern(id) {
        return Ok(());
    }
    Err(ApiError::validation(format!(
        "1 validation error detected: Value '{quoted}' at 'modelId' failed to satisfy \
         constraint: Member must satisfy regular expression pattern: {pattern}"
    )))
}

/// The error for an id that satisfies the pattern but names no model (with strict models).
pub(crate) fn unknown_model(id: &str) -> ApiError {
    if id.starts_with("arn:") {
        ApiError::not_found(
            "Could not resolve the foundation model from the provided model identifier.",
        )
    } else {
        ApiError::validation("The provided model identifier is invalid.")
    }
}

/// Whether `id` matches one alternative of the patterns in full. Written out by hand (the
/// crate has no regex engine): the loose alternatives `[a-zA-Z0-9-:.]+` and
/// `([0-9a-zA-Z][_-]?)+` accept every id that contains no `/`, so only ARNs with a resource
/// path need the ARN forms.
fn matches_pattern(id: &str) -> bool {
    loose(id) || alnum_runs(id) || bedrock_arn(id) || sagemaker_endpoint(id)
}

fn id_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b':' | b'.')
}

/// `[a-zA-Z0-9-:.]+`
fn loose(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(id_char)
}

/// `([0-9a-zA-Z][_-]?)+`
fn alnum_runs(s: &str) -> bool {
    let mut previous_separator = true;
    for b in s.bytes() {
        match b {
            b'_' | b'-' if !previous_separator => previous_separator = true,
            _ if b.is_ascii_alphanumeric() => previous_separator = false,
            _ => return false,
        }
    }
    !s.is_empty()
}

fn lower(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn short_id(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn account(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// `provider.name` with an optional `[.:]suffix`, each part `[a-z0-9-]{1,63}`.
fn model_name(s: &str) -> bool {
    let Some((provider, rest)) = s.split_once('.') else {
        return false;
    };
    let (name, suffix) = match rest.find(['.', ':']) {
        Some(i) => (&rest[..i], Some(&rest[i.saturating_add(1)..])),
        None => (rest, None),
    };
    lower(provider, 63) && lower(name, 63) && suffix.is_none_or(|x| lower(x, 63))
}

/// The Bedrock ARN forms: `arn:aws[-partition]:bedrock:region:account:resource`.
fn bedrock_arn(id: &str) -> bool {
    let Some(rest) = id.strip_prefix("arn:aws") else {
        return false;
    };
    let rest = match rest.strip_prefix('-') {
        Some(partition) => match partition.split_once(':') {
            Some((p, r)) if !p.is_empty() => r,
            _ => return false,
        },
        None => match rest.strip_prefix(':') {
            Some(r) => r,
            None => return false,
        },
    };
    let Some(rest) = rest.strip_prefix("bedrock:") else {
        return false;
    };
    let Some((region, rest)) = rest.split_once(':') else {
        return false;
    };
    if !lower(region, 20) {
        return false;
    }
    let Some((account_id, resource)) = rest.split_once(':') else {
        return false;
    };
    let Some((kind, path)) = resource.split_once('/') else {
        return false;
    };
    match (account_id, kind) {
        ("", "foundation-model") => model_name(path),
        (a, "custom-model") if account(a) => path
            .split_once('/')
            .is_some_and(|(m, tail)| model_name(m) && !m.contains(':') && short_id(tail, 12)),
        (a, "imported-model" | "provisioned-model" | "custom-model-deployment") if account(a) => {
            short_id(path, 12)
        }
        (
            a,
            "inference-profile"
            | "application-inference-profile"
            | "prompt-router"
            | "default-prompt-router",
        ) if account(a) => loose(path),
        (a, "prompt") if account(a) => {
            let (name, version) = path.split_once(':').unwrap_or((path, ""));
            name.len() == 10
                && name.bytes().all(|b| b.is_ascii_alphanumeric())
                && (version.is_empty()
                    || (version.len() <= 5 && version.bytes().all(|b| b.is_ascii_digit())))
        }
        _ => false,
    }
}

/// `arn:aws:sagemaker:[a-z0-9-]+:[0-9]{12}:endpoint/[a-zA-Z0-9-]+`
fn sagemaker_endpoint(id: &str) -> bool {
    let Some(rest) = id.strip_prefix("arn:aws:sagemaker:") else {
        return false;
    };
    let Some((region, rest)) = rest.split_once(':') else {
        return false;
    };
    let Some((account_id, name)) = rest
        .split_once(':')
        .and_then(|(a, r)| Some((a, r.strip_prefix("endpoint/")?)))
    else {
        return false;
    };
    lower(region, usize::MAX)
        && account(account_id)
        && !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_ids_match() {
        for id in [
            "anthropic.claude-3-haiku-20240307-v1:0",
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
            "global.anthropic.claude-sonnet-4-5-20250929-v1:0",
            "amazon.titan-embed-text-v2:0",
            "my_custom-model",
            "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-v2:1",
            "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc123",
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-haiku-20240307-v1:0",
            "arn:aws:bedrock:us-west-2:123456789012:provisioned-model/abcdefghijkl",
            "arn:aws-us-gov:bedrock:us-gov-west-1:123456789012:imported-model/abcdefghijkl",
            "arn:aws:bedrock:us-east-1:123456789012:custom-model/amazon.titan-text-express-v1/abcdefghijkl",
            "arn:aws:bedrock:us-east-1:123456789012:prompt/ABCDEFGHIJ:3",
            "arn:aws:bedrock:us-east-1:123456789012:default-prompt-router/anthropic.claude:1",
            "arn:aws:sagemaker:us-east-1:123456789012:endpoint/my-endpoint",
        ] {
            assert!(check_pattern(id, INVOKE_PATTERN).is_ok(), "{id}");
        }
    }

    #[test]
    fn broken_ids_are_refused_with_the_pattern() {
        for id in [
            "has space",
            "anthropic/claude",
            "_leading",
            "double__underscore",
            "arn:aws:bedrock:us-east-1:123:provisioned-model/abcdefghijkl",
            "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/short",
            "arn:aws:bedrock:us-east-1:123456789012:unknown-kind/abc",
            "ünïcode",
        ] {
            let e = check_pattern(id, CONVERSE_PATTERN).unwrap_err();
            assert_eq!(
                e.message,
                format!(
                    "1 validation error detected: Value '{id}' at 'modelId' failed to satisfy \
                     constraint: Member must satisfy regular expression pattern: {CONVERSE_PATTERN}"
                )
            );
        }
        assert!(
            check_pattern("", INVOKE_PATTERN)
                .unwrap_err()
                .message
                .ends_with("Member must have length greater than or equal to 1")
        );
        assert!(
            check_pattern(&"a".repeat(2049), INVOKE_PATTERN)
                .unwrap_err()
                .message
                .ends_with("Member must have length less than or equal to 2048")
        );
    }

    #[test]
    fn unknown_models_by_kind() {
        let e = unknown_model("vendor.no-such-model-v1:0");
        assert_eq!(
            (e.status.as_u16(), e.code, e.message.as_str()),
            (
                400,
                "ValidationException",
                "The provided model identifier is invalid."
            )
        );
        let e =
            unknown_model("arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abcdefghijkl");
        assert_eq!(
            (e.status.as_u16(), e.code, e.message.as_str()),
            (
                404,
                "ResourceNotFoundException",
                "Could not resolve the foundation model from the provided model identifier."
            )
        );
    }
}
