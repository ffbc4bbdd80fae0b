//! `tollgate demo`: a catalog and licenses to try the API with, seeded through the
//! same engine as every request (the demo's events are in the ledger like any other).

use std::path::Path;
use std::sync::Arc;

use tollgate_core::catalog::{Feature, PlanSpec, ProductSpec};
use tollgate_core::command::IssueLicense;
use tollgate_core::gate::{GateCommand, GateSpec};
use tollgate_core::ids::{FeatureKey, PlanKey, ProductKey};
use tollgate_core::{Command, Meta};
use tollgate_server::AppState;

const PRODUCT: &str = "acme-cad";
/// The demo's rollout gate.
const DEMO_GATE: &str = "gpu-renderer-v2";

async fn run(app: &AppState, command: Command) -> anyhow::Result<()> {
    let meta = Meta { actor: "demo".into(), reason: Some("demo data".into()), request_id: "demo-seed".into() };
    app.engine.submit(command, meta, 200, None, Box::new(|_, _| serde_json::Value::Null)).await?;
    Ok(())
}

/// A plan with no limits; callers set the ones they need with struct update syntax.
fn plan(key: &str, name: &str, features: &[&str]) -> anyhow::Result<PlanSpec> {
    Ok(PlanSpec {
        key: PlanKey::parse(key)?,
        product: ProductKey::parse(PRODUCT)?,
        name: name.into(),
        features: features.iter().map(|f| FeatureKey::parse(f)).collect::<Result<_, _>>()?,
        duration_days: None,
        trial_days: None,
        grace_days: None,
        max_machines: None,
        max_users: None,
        offline_days: None,
        floating: None,
        meters: vec![],
    })
}

/// Seeds the demo catalog and licenses once; a restarted demo keeps its data.
/// Refuses to start the demo on a ledger that is not its own: it seeds demo products,
/// licenses and a gate, for ever (the ledger is append-only). `TOLLGATE_DATABASE_URL`,
/// `TOLLGATE_DATA` or a config file set for a real server would otherwise send them
/// there.
pub fn check_target(settings: &crate::config::Settings) -> anyhow::Result<()> {
    if settings.database.is_some() {
        anyhow::bail!(
            "tollgate demo runs on its own embedded ledger, but a PostgreSQL database is set (--database, \
             TOLLGATE_DATABASE_URL or the config file): the demo would seed it with demo data for good. Unset it, \
             or run `tollgate serve`"
        );
    }
    let db = tollgate_server::db_path(&settings.data);
    if !db.exists() {
        return Ok(());
    }
    let store = tollgate_store::SqliteStore::open_read_only(&db)?;
    // A demo's ledger is small; a long one is a real server's, whatever it holds.
    let len = tollgate_store::LedgerStore::len(&store)?;
    let theirs = len > 10_000 || {
        let state = tollgate_server::replay::load(&store)?.state;
        state.products().any(|p| p.key.as_str() != PRODUCT)
    };
    if theirs {
        anyhow::bail!(
            "{} holds a ledger that is not the demo's ({len} events): the demo would add its data to it for good. \
             Give the demo another --data (or unset TOLLGATE_DATA), or run `tollgate serve` on it",
            db.display()
        );
    }
    Ok(())
}

/// Seeds what is missing, item by item: a first start interrupted half-way (Ctrl-C, a
/// failure) is completed by the next, instead of leaving a demo without licenses or
/// its gate.
pub async fn seed(app: &Arc<AppState>) -> anyhow::Result<()> {
    if app.engine.state().product(PRODUCT).is_none() {
        create_product(app).await?;
    }
    seed_rest(app).await
}

async fn create_product(app: &Arc<AppState>) -> anyhow::Result<()> {
    let features = [
        ("core", "Core modelling"),
        ("export.pdf", "PDF export"),
        ("export.step", "STEP export"),
        ("render.gpu", "GPU rendering"),
        ("collab", "Real-time collaboration"),
    ];
    run(
        app,
        Command::CreateProduct(ProductSpec {
            key: ProductKey::parse(PRODUCT)?,
            name: "Acme CAD".into(),
            features: features
                .iter()
                .map(|(k, n)| Ok(Feature { key: FeatureKey::parse(k)?, name: (*n).into() }))
                .collect::<anyhow::Result<_>>()?,
        }),
    )
    .await?;
    Ok(())
}

async fn seed_rest(app: &Arc<AppState>) -> anyhow::Result<()> {
    for p in [
        PlanSpec {
            trial_days: Some(14),
            max_machines: Some(1),
            max_users: Some(1),
            ..plan("cad-trial", "Acme CAD trial", &["core", "export.pdf"])?
        },
        PlanSpec {
            duration_days: Some(365),
            grace_days: Some(14),
            max_machines: Some(2),
            max_users: Some(1),
            ..plan("cad-standard", "Acme CAD Standard (annual)", &["core", "export.pdf"])?
        },
        PlanSpec {
            duration_days: Some(365),
            grace_days: Some(30),
            max_machines: Some(5),
            max_users: Some(10),
            ..plan("cad-pro", "Acme CAD Pro (annual)", &["core", "export.pdf", "export.step", "render.gpu", "collab"])?
        },
        PlanSpec {
            max_machines: Some(1),
            max_users: Some(1),
            ..plan("cad-perpetual", "Acme CAD perpetual", &["core", "export.pdf", "export.step"])?
        },
    ] {
        if app.engine.state().plan(p.key.as_str()).is_none() {
            run(app, Command::CreatePlan(p)).await?;
        }
    }
    let licenses = [
        ("Initech", "cad-pro"),
        ("Globex", "cad-trial"),
        ("Hooli", "cad-standard"),
        ("Umbrella", "cad-perpetual"),
        ("Vandelay Industries", "cad-standard"),
    ];
    let mut ids = Vec::new();
    for (licensee, plan) in licenses {
        let existing = app
            .engine
            .state()
            .licenses_after(None)
            .find(|l| l.licensee == licensee && l.product.as_str() == PRODUCT)
            .map(|l| l.id.clone());
        if let Some(id) = existing {
            ids.push(id);
            continue;
        }
        let id = tollgate_server::api::licenses::new_license_id();
        ids.push(id.clone());
        run(
            app,
            Command::IssueLicense(IssueLicense {
                id,
                key: tollgate_server::api::licenses::new_license_key(),
                product: ProductKey::parse(PRODUCT)?,
                plan: PlanKey::parse(plan)?,
                licensee: licensee.into(),
                expires_at: None,
                metadata: Default::default(),
                external_id: None,
            }),
        )
        .await?;
    }
    // Both idempotent: a second start changes nothing.
    run(app, Command::Suspend(ids[3].clone())).await?;
    run(app, Command::Revoke(ids[4].clone())).await?;
    // A rollout gate: the new GPU renderer, for licenses entitled to `render.gpu`
    // (Initech's Pro, not Hooli's Standard), to every user of theirs.
    let gate: GateSpec = serde_json::from_value(serde_json::json!({
        "key": DEMO_GATE,
        "description": "The new GPU renderer, rolled out to Pro licenses",
        "feature": {"product": PRODUCT, "feature": "render.gpu"},
        "strategies": [{"name": "flexibleRollout", "parameters": {"rollout": "100", "stickiness": "default", "groupId": DEMO_GATE}}],
        "variants": [
            {"name": "vulkan", "weight": 500, "stickiness": "default", "payload": {"type": "string", "value": "vulkan"}},
            {"name": "opengl", "weight": 500, "stickiness": "default", "payload": {"type": "string", "value": "opengl"}}
        ]
    }))?;
    if app.engine.state().gate(DEMO_GATE).is_none() {
        run(app, Command::Gates(GateCommand::Put(gate))).await?;
    }
    Ok(())
}

/// Written in one go, with errors ignored: stdout may be a closed pipe (`| head`, a
/// test that stopped reading), and the server must keep serving then.
pub fn print_welcome(app: &AppState, base: &str, data: &Path) {
    use std::fmt::Write as _;
    use std::io::Write as _;
    let mut text = String::new();
    macro_rules! w {
        () => {
            text.push('\n')
        };
        ($($arg:tt)*) => {{
            let _ = writeln!(text, $($arg)*);
        }};
    }
    let state = app.engine.state();
    let key =
        state.licenses_after(None).find(|l| l.licensee == "Initech").map(|l| l.key.to_string()).unwrap_or_default();
    let token_file = data.join(tollgate_server::BOOTSTRAP_TOKEN_FILE);
    let token_hint = if token_file.exists() {
        format!("$(cat {})", token_file.display())
    } else {
        "$TOLLGATE_BOOTSTRAP_TOKEN".to_string()
    };
    w!();
    w!("Tollgate demo is running at {base}");
    w!("  data:        {}", data.display());
    w!(
        "  admin token: {}",
        if token_file.exists() {
            token_file.display().to_string()
        } else {
            "the one in TOLLGATE_BOOTSTRAP_TOKEN".into()
        }
    );
    w!("  ledger:      {} events", state.seq());
    w!();
    w!("Try:");
    w!("  TOKEN={token_hint}");
    w!("  curl -s -H \"Authorization: Bearer $TOKEN\" {base}/v1/licenses");
    w!(
        "  curl -s -H \"Authorization: Bearer $TOKEN\" -H 'content-type: application/json' -d '{{\"key\":\"{key}\",\"feature\":\"render.gpu\"}}' {base}/v1/validate"
    );
    w!(
        "  curl -s -H \"Authorization: Bearer $TOKEN\" -H 'content-type: application/json' -d '{{\"product\":\"acme-cad\",\"plan\":\"cad-trial\",\"licensee\":\"you@example.com\"}}' {base}/v1/licenses"
    );
    w!(
        "  curl -s -H \"Authorization: Bearer $TOKEN\" -H 'content-type: application/json' -d '{{\"context\":{{\"targetingKey\":\"user-1\",\"licenseKey\":\"{key}\"}}}}' {base}/ofrep/v1/evaluate/flags/{DEMO_GATE}"
    );
    w!("  curl -s {base}/v1/ledger/checkpoint");
    w!();
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}
