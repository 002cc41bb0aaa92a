use serde::de::DeserializeOwned;

use super::{CallParts, FromCall};
use crate::marker::ViaPayload;
use crate::{Payload, PayloadError};

/// The payload: any `T: DeserializeOwned` decodes it, naming the offending
/// field in a `bad_payload` error reply when it does not fit.
impl<T: DeserializeOwned + Send> FromCall<ViaPayload> for T {
    type Rejection = PayloadError;

    async fn from_call(_parts: &CallParts, payload: Payload) -> Result<Self, PayloadError> {
        payload.deserialize()
    }
}
