//! The OpenAPI document, generated from the handlers' annotations.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api;

pub mod schemas;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// What every operation shares, written once instead of on each handler: errors are
/// `application/problem+json`; a secured operation may answer 401; one with a body may
/// answer 400 (not JSON) and 422 (JSON the operation does not take); and operation ids
/// are unique (code generators need them so), handler names that repeat across
/// modules (`list`, `get`, `issue`, ...) getting their path appended.
struct Conventions;

impl Modify for Conventions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use std::collections::HashMap;

        use utoipa::openapi::path::Operation;
        use utoipa::openapi::{Content, RefOr};

        fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
            [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
                &mut item.head,
                &mut item.options,
                &mut item.trace,
            ]
            .into_iter()
            .filter_map(Option::as_mut)
        }
        let is_problem = |c: &Content| matches!(&c.schema, Some(RefOr::Ref(r)) if r.ref_location.ends_with("/Problem"));
        let mut seen: HashMap<String, usize> = HashMap::new();
        for item in openapi.paths.paths.values_mut() {
            for op in operations(item) {
                if let Some(id) = &op.operation_id {
                    *seen.entry(id.clone()).or_default() += 1;
                }
            }
        }
        for (path, item) in openapi.paths.paths.iter_mut() {
            // A write to something the path names may find it in a state that refuses it.
            if path.contains('{') {
                for op in [&mut item.post, &mut item.put, &mut item.delete].into_iter().filter_map(Option::as_mut) {
                    add_problem(
                        &mut op.responses,
                        "409",
                        "its current state refuses this (`LICENSE_REVOKED`, a limit reached, ...; the code says which)",
                    );
                }
            }
            // Every `{name}` of the path is a required text parameter (handlers take
            // them through `ApiPath`, which utoipa cannot see into).
            let names: Vec<&str> =
                path.split('/').filter_map(|w| w.strip_prefix('{').and_then(|w| w.strip_suffix('}'))).collect();
            for op in operations(item) {
                let params = op.parameters.get_or_insert_with(Vec::new);
                for name in &names {
                    let declared = params
                        .iter()
                        .any(|p| p.name == *name && matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Path));
                    if !declared {
                        params.push(
                            utoipa::openapi::path::ParameterBuilder::new()
                                .name(*name)
                                .parameter_in(utoipa::openapi::path::ParameterIn::Path)
                                .required(utoipa::openapi::Required::True)
                                .schema(Some(
                                    utoipa::openapi::ObjectBuilder::new()
                                        .schema_type(utoipa::openapi::schema::Type::String),
                                ))
                                .build(),
                        );
                    }
                }
                if params.is_empty() {
                    op.parameters = None;
                }
            }
            for op in operations(item) {
                if let Some(id) = &op.operation_id
                    && seen.get(id).is_some_and(|n| *n > 1)
                {
                    let words: Vec<&str> = path
                        .split('/')
                        .filter(|w| !w.is_empty() && *w != "v1" && !w.starts_with('{') && !w.starts_with('.'))
                        .collect();
                    op.operation_id = Some(format!("{id}_{}", words.join("_").replace(['-', '.'], "_")));
                }
                for response in op.responses.responses.values_mut() {
                    if let RefOr::T(r) = response
                        && let Some(c) = r.content.shift_remove("application/json")
                    {
                        let kind = if is_problem(&c) { crate::problem::PROBLEM_JSON } else { "application/json" };
                        r.content.insert(kind.to_string(), c);
                    }
                }
                let mut add = |status: &str, description: &str| add_problem(&mut op.responses, status, description);
                if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
                    add("401", "`UNAUTHORIZED`: no bearer token, or not a valid one");
                    add("403", "`FORBIDDEN`: the token's role (or product) does not allow this");
                    add(
                        "503",
                        "`TOKENS_UNAVAILABLE`: the token is not among those known, and the token store cannot be read just now; retry",
                    );
                }
                if op.request_body.is_some() {
                    add("400", "`MALFORMED_JSON`: the body is not JSON");
                    add("413", "`PAYLOAD_TOO_LARGE`: the body is over 1 MiB");
                    add("415", "`UNSUPPORTED_MEDIA_TYPE`: the body is not sent as application/json");
                    add("422", "`INVALID_INPUT`: JSON this operation does not take (the detail names the field)");
                }
                let has_query = op.parameters.as_ref().is_some_and(|ps| {
                    ps.iter().any(|p| matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Query))
                });
                if has_query {
                    add(
                        "400",
                        "`INVALID_QUERY`: a query parameter is malformed or out of range (the detail says which)",
                    );
                }
                if matches!(path.as_str(), "/v1/events" | "/v1/gates/{key}/preview") {
                    add(
                        "429",
                        "`TOO_MANY_SCANS`: two reads of every license or of the whole ledger are running; retry",
                    );
                }
                if path.contains('{') {
                    add("404", "what the path names does not exist (`LICENSE_NOT_FOUND`, `PLAN_NOT_FOUND`, ...)");
                    add("422", "`INVALID_INPUT`: a path segment is malformed (the detail says which)");
                }
            }
        }
    }
}

/// Documents `status` as a problem+json answer of an operation, unless it already says what
/// that status means.
fn add_problem(responses: &mut utoipa::openapi::Responses, status: &str, description: &str) {
    use utoipa::openapi::{Content, Ref, RefOr, Response};
    responses.responses.entry(status.to_string()).or_insert_with(|| {
        let mut r = Response::new(description);
        r.content
            .insert(crate::problem::PROBLEM_JSON.to_string(), Content::new(Some(Ref::from_schema_name("Problem"))));
        RefOr::T(r)
    });
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Tollgate", description = "License and entitlement server. Errors are RFC 9457 problem+json with a stable `code`. Every POST honours `Idempotency-Key`. Every response carries `Tollgate-Seq`, the ledger sequence it reflects; send `Tollgate-Min-Seq: N` with a bearer token (401 without one, on every route) to wait (at most 5 s) until the answering node has reached N, for read-your-writes across nodes: 503 `SEQ_NOT_REACHED` with `Retry-After` if it does not. A write refused because other nodes kept appending first is 503 `LEDGER_CONTENDED` with `Retry-After`; nothing was written. A write the store refused is 503 `LEDGER_UNAVAILABLE` with `Retry-After`; nothing was written. 503 `WRITE_UNCONFIRMED`: the store reported an error and could not be read back, so the write may be recorded; retry it with the same `Idempotency-Key`."),
    paths(
        api::system::healthz, api::system::readyz, api::system::openapi,
        api::catalog::create_product, api::catalog::update_product, api::catalog::list_products, api::catalog::get_product,
        api::catalog::create_plan, api::catalog::update_plan, api::catalog::list_plans, api::catalog::get_plan,
        api::licenses::issue, api::licenses::get, api::licenses::list,
        api::licenses::suspend, api::licenses::reinstate, api::licenses::revoke, api::licenses::renew, api::licenses::change_plan,
        api::validate::validate,
        api::machines::activate, api::machines::deactivate, api::machines::list,
        api::machines::assign, api::machines::unassign, api::machines::users,
        api::leases::checkout, api::leases::heartbeat, api::leases::release, api::leases::list,
        api::usage::record, api::entitlements::entitlements, api::entitlements::set_overrides,
        api::keys::jwks, api::keys::list, api::keys::rotate, api::license_tokens::issue, api::revocations::feed,
        api::offline::activate, api::offline::deactivate,
        api::events::list,
        api::import::licenses,
        api::gates::list, api::gates::get, api::gates::put, api::gates::history, api::gates::rollback, api::gates::kill,
        api::gates::preview, api::gates::import, api::gates::ruleset,
        api::ofrep::evaluate_one, api::ofrep::evaluate_all,
        api::ledger::checkpoint, api::ledger::key, api::ledger::entries, api::ledger::inclusion, api::ledger::consistency,
        api::system::create_token, api::system::list_tokens, api::system::revoke_token,
        crate::cluster::status,
    ),
    components(schemas(crate::problem::Problem, crate::auth::Role)),
    modifiers(&Bearer, &Conventions)
)]
pub struct ApiDoc;
