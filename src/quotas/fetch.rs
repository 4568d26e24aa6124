//! Reading the applied quotas from AWS Service Quotas.

use std::fmt;

use aws_sdk_servicequotas::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_servicequotas::operation::list_service_quotas::ListServiceQuotasError;

use super::{AppliedQuotas, ListedQuota, ModelNames};

/// Why the applied quotas could not be read. The configured quotas still work: a
/// [`BedrockThrottle`](crate::sdk::BedrockThrottle) built without applied quotas admits on
/// what it was told.
#[derive(Debug)]
#[non_exhaustive]
pub enum ServiceQuotasError {
    /// Service Quotas could not be reached (connection, DNS, TLS, timeout).
    Unreachable(Box<dyn std::error::Error + Send + Sync>),
    /// The credentials may not call `servicequotas:ListServiceQuotas`.
    AccessDenied {
        /// The service's message.
        message: String,
    },
    /// Service Quotas does not know the service code (`NoSuchResourceException`: "The request
    /// failed because the specified service does not exist.").
    UnknownService {
        /// The service code asked for.
        service_code: String,
        /// The service's message.
        message: String,
    },
    /// Any other failure of the call (throttled, service error, a response that did not parse).
    Service {
        /// The error code, if the service sent one.
        code: Option<String>,
        /// The error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl fmt::Display for ServiceQuotasError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceQuotasError::Unreachable(e) => write!(
                f,
                "Service Quotas is unreachable ({e}): the configured quotas stay in force"
            ),
            ServiceQuotasError::AccessDenied { message } => write!(
                f,
                "access denied to Service Quotas ({message}): allow servicequotas:ListServiceQuotas \
                 or configure the quotas by hand"
            ),
            ServiceQuotasError::UnknownService {
                service_code,
                message,
            } => write!(
                f,
                "Service Quotas does not know the service code `{service_code}` ({message})"
            ),
            ServiceQuotasError::Service { code, source } => write!(
                f,
                "Service Quotas failed ({}): {source}",
                code.as_deref().unwrap_or("no error code")
            ),
        }
    }
}

impl std::error::Error for ServiceQuotasError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ServiceQuotasError::Unreachable(e) => Some(e.as_ref()),
            ServiceQuotasError::AccessDenied { .. } | ServiceQuotasError::UnknownService { .. } => {
                None
            }
            ServiceQuotasError::Service { source, .. } => Some(source.as_ref()),
        }
    }
}

impl<R: fmt::Debug + Send + Sync + 'static> From<SdkError<ListServiceQuotasError, R>>
    for ServiceQuotasError
{
    fn from(error: SdkError<ListServiceQuotasError, R>) -> Self {
        match error {
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
                ServiceQuotasError::Unreachable(Box::new(error))
            }
            SdkError::ServiceError(ref e) if e.err().is_access_denied_exception() => {
                ServiceQuotasError::AccessDenied {
                    message: e.err().message().unwrap_or("access denied").to_owned(),
                }
            }
            other => ServiceQuotasError::Service {
                code: other.code().map(str::to_owned),
                source: Box::new(other),
            },
        }
    }
}

impl AppliedQuotas {
    /// Lists every applied quota of service code `bedrock` (every page) in the client's
    /// region, and reads them through `names`.
    ///
    /// # Errors
    ///
    /// [`ServiceQuotasError`]: unreachable, access denied, or another failure of the call.
    pub async fn fetch(
        client: &aws_sdk_servicequotas::Client,
        names: &ModelNames,
    ) -> Result<AppliedQuotas, ServiceQuotasError> {
        Self::fetch_service(client, "bedrock", names).await
    }

    /// As [`fetch`](Self::fetch), for another service code with Bedrock's quota names (a
    /// partition or a preview that lists them under its own code).
    ///
    /// # Errors
    ///
    /// [`ServiceQuotasError::UnknownService`] when Service Quotas does not know the code,
    /// else as [`fetch`](Self::fetch).
    pub async fn fetch_service(
        client: &aws_sdk_servicequotas::Client,
        service_code: &str,
        names: &ModelNames,
    ) -> Result<AppliedQuotas, ServiceQuotasError> {
        let region = client
            .config()
            .region()
            .map(|r| r.as_ref().to_owned())
            .unwrap_or_default();
        let mut listing = Vec::new();
        let mut next_token: Option<String> = None;
        loop {
            let page = client
                .list_service_quotas()
                .service_code(service_code)
                .set_next_token(next_token.take())
                .send()
                .await
                .map_err(|error| match error {
                    SdkError::ServiceError(ref e) if e.err().is_no_such_resource_exception() => {
                        ServiceQuotasError::UnknownService {
                            service_code: service_code.to_owned(),
                            message: e.err().message().unwrap_or_default().to_owned(),
                        }
                    }
                    other => ServiceQuotasError::from(other),
                })?;
            for q in page.quotas() {
                listing.push(ListedQuota {
                    code: q.quota_code().unwrap_or_default().to_owned(),
                    name: q.quota_name().unwrap_or_default().to_owned(),
                    value: q.value().unwrap_or(f64::NAN),
                });
            }
            match page.next_token() {
                Some(token) if !token.is_empty() => next_token = Some(token.to_owned()),
                _ => break,
            }
        }
        tracing::debug!(
            region,
            quotas = listing.len(),
            "listed the applied Bedrock quotas"
        );
        Ok(AppliedQuotas::from_listing(region, listing, names))
    }
}
