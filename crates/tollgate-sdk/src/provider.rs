//! An OpenFeature provider (`open-feature` crate) over [`GateClient`]: every flag
//! resolves locally from the signed ruleset, with no network per evaluation.
//!
//! The context maps as the server's OFREP endpoint maps it (so local and remote
//! answers agree): the targeting key is Unleash's `userId`; `sessionId`,
//! `remoteAddress`, `currentTime`, `environment`, `appName` and `licenseKey` are
//! Unleash's fields; every other field is a property. A `licenseKey` is validated
//! through the client the first time it is seen, and again at every refresh. A gate resolves as a boolean
//! (on/off); its chosen variant's payload resolves as a string, integer, float or
//! structure, and asking a type the payload is not is `TYPE_MISMATCH`, so the
//! application's default applies.

use std::sync::Arc;

use open_feature::provider::{FeatureProvider, ProviderMetadata, ProviderStatus, ResolutionDetails};
use open_feature::{
    EvaluationContext, EvaluationContextFieldValue, EvaluationError, EvaluationErrorCode, EvaluationReason,
    EvaluationResult, FlagMetadata, StructValue, Value, async_trait,
};
use tollgate_core::gate::{Context, Reason};

use crate::gates::{GateAnswer, GateClient};

/// The provider; cheap to clone around as an `Arc<GateClient>` holder.
pub struct TollgateProvider {
    gates: Arc<GateClient>,
    metadata: ProviderMetadata,
}

impl TollgateProvider {
    pub fn new(gates: Arc<GateClient>) -> Self {
        Self { gates, metadata: ProviderMetadata::new("tollgate") }
    }
}

fn invalid(message: String) -> EvaluationError {
    EvaluationError { code: EvaluationErrorCode::InvalidContext, message: Some(message) }
}

/// Maps an OpenFeature context onto Unleash's.
pub fn unleash_context(ec: &EvaluationContext) -> EvaluationResult<Context> {
    let mut ctx = Context { user_id: ec.targeting_key.clone(), ..Context::default() };
    for (name, value) in &ec.custom_fields {
        let text = match value {
            EvaluationContextFieldValue::Bool(b) => b.to_string(),
            EvaluationContextFieldValue::Int(i) => i.to_string(),
            EvaluationContextFieldValue::Float(f) => f.to_string(),
            EvaluationContextFieldValue::String(s) => s.clone(),
            EvaluationContextFieldValue::DateTime(t) => tollgate_core::Timestamp::from_datetime(*t)
                .map(|t| t.to_string())
                .ok_or_else(|| invalid(format!("context field '{name}' is out of range")))?,
            EvaluationContextFieldValue::Struct(_) => {
                return Err(invalid(format!("context field '{name}' is a structure; gates compare text")));
            }
        };
        let slot = match name.as_str() {
            "targetingKey" if ctx.user_id.is_none() => &mut ctx.user_id,
            "sessionId" => &mut ctx.session_id,
            "remoteAddress" => &mut ctx.remote_address,
            "currentTime" => &mut ctx.current_time,
            "environment" => &mut ctx.environment,
            "appName" => &mut ctx.app_name,
            "licenseKey" => &mut ctx.license_key,
            _ => {
                ctx.properties.insert(name.clone(), text);
                continue;
            }
        };
        *slot = Some(text);
    }
    Ok(ctx)
}

fn reason(r: Reason) -> EvaluationReason {
    match r {
        Reason::Static => EvaluationReason::Static,
        Reason::TargetingMatch => EvaluationReason::TargetingMatch,
        Reason::Split => EvaluationReason::Split,
        Reason::Disabled => EvaluationReason::Disabled,
        // OpenFeature has no "unlicensed": the flag fell back to off; the metadata says why.
        Reason::Default | Reason::Unlicensed => EvaluationReason::Default,
    }
}

fn mismatch(flag: &str, wanted: &str) -> EvaluationError {
    EvaluationError {
        code: EvaluationErrorCode::TypeMismatch,
        message: Some(format!("gate '{flag}' has no {wanted} payload for this context")),
    }
}

impl TollgateProvider {
    async fn answer(&self, flag: &str, ec: &EvaluationContext) -> EvaluationResult<GateAnswer> {
        let ctx = unleash_context(ec)?;
        // A license the context names is validated once (then again at every refresh),
        // as the server's OFREP endpoint validates it, so both answer alike. If it
        // cannot be validated now, the context counts as naming no license.
        if let Some(key) = &ctx.license_key
            && !self.gates.knows_license(key)
        {
            let _ = self.gates.use_context_license(key).await;
        }
        self.gates.evaluate(flag, &ctx).ok_or_else(|| EvaluationError {
            code: EvaluationErrorCode::FlagNotFound,
            message: Some(format!("no gate with key '{flag}' in the ruleset")),
        })
    }

    fn details<T>(a: &GateAnswer, value: T) -> ResolutionDetails<T> {
        let variant = match &a.variant {
            Some(v) => v.name.clone(),
            None if a.enabled => "on".to_string(),
            None => "off".to_string(),
        };
        let mut metadata = FlagMetadata::default().with_value("version", a.version as i64);
        if let Some(code) = a.license_code {
            metadata.add_value("licenseCode", code);
        }
        ResolutionDetails {
            value,
            variant: Some(variant),
            reason: Some(reason(a.reason)),
            flag_metadata: Some(metadata),
        }
    }

    /// The payload's text and type, when the chosen variant carries one.
    fn payload(a: &GateAnswer) -> Option<(&str, &str)> {
        a.variant.as_ref()?.payload.as_ref().map(|p| (p.kind.as_str(), p.value.as_str()))
    }
}

#[async_trait]
impl FeatureProvider for TollgateProvider {
    fn metadata(&self) -> &ProviderMetadata {
        &self.metadata
    }

    fn status(&self) -> ProviderStatus {
        // `GateClient::connect` returns only once a verified ruleset is loaded.
        ProviderStatus::Ready
    }

    async fn resolve_bool_value(
        &self,
        flag: &str,
        ec: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<bool>> {
        let a = self.answer(flag, ec).await?;
        Ok(Self::details(&a, a.enabled))
    }

    async fn resolve_int_value(&self, flag: &str, ec: &EvaluationContext) -> EvaluationResult<ResolutionDetails<i64>> {
        let a = self.answer(flag, ec).await?;
        let v = Self::payload(&a)
            .and_then(|(_, v)| v.trim().parse::<i64>().ok())
            .ok_or_else(|| mismatch(flag, "integer"))?;
        Ok(Self::details(&a, v))
    }

    async fn resolve_float_value(
        &self,
        flag: &str,
        ec: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<f64>> {
        let a = self.answer(flag, ec).await?;
        let v = Self::payload(&a)
            .and_then(|(_, v)| v.trim().parse::<f64>().ok())
            .ok_or_else(|| mismatch(flag, "number"))?;
        Ok(Self::details(&a, v))
    }

    async fn resolve_string_value(
        &self,
        flag: &str,
        ec: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<String>> {
        let a = self.answer(flag, ec).await?;
        let v = Self::payload(&a).map(|(_, v)| v.to_string()).ok_or_else(|| mismatch(flag, "string"))?;
        Ok(Self::details(&a, v))
    }

    async fn resolve_struct_value(
        &self,
        flag: &str,
        ec: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<StructValue>> {
        let a = self.answer(flag, ec).await?;
        let parsed = Self::payload(&a)
            .filter(|(kind, _)| *kind == "json")
            .and_then(|(_, v)| serde_json::from_str::<serde_json::Value>(v).ok())
            .ok_or_else(|| mismatch(flag, "JSON"))?;
        match Value::try_from(parsed)? {
            Value::Struct(s) => Ok(Self::details(&a, s)),
            _ => Err(mismatch(flag, "JSON object")),
        }
    }
}
