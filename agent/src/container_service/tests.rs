//! Unit tests of what needs no containerd: request validation, restart
//! policy mapping, the supervisor's decisions, the error mapping.

use tonic::Code;

use super::supervisor::{decide, Action};
use super::*;

fn request(config: &str) -> v1::CreateContainerRequest {
    v1::CreateContainerRequest {
        image_name: "hello:v1".into(),
        app_config: config.as_bytes().to_vec(),
        ..Default::default()
    }
}

fn status(e: AppsError) -> Status {
    Status::from(e)
}

#[test]
fn create_requests_are_validated_naming_the_field() {
    let spec = create_spec(request(r#"{"appId":"com.example.hello","version":"1.2"}"#)).unwrap();
    assert_eq!(spec.app.name, "com.example.hello");
    assert_eq!(spec.app.restart, RestartPolicy::UnlessStopped);
    assert_eq!(spec.app.config.version, "1.2");

    let mut r = request(r#"{"appId":"com.example.hello"}"#);
    r.app_name = "other".into();
    r.cmd = "sh -c".into();
    r.user_args = vec!["echo hi".into()];
    r.working_dir = "/srv".into();
    r.restart_policy = Some(v1_shared::RestartPolicy {
        mode: v1_shared::RestartPolicyMode::OnFailure as i32,
        on_failure_max_retries: 3,
    });
    let spec = create_spec(r).unwrap();
    assert_eq!(spec.app.name, "other");
    assert_eq!(spec.app.config.args.as_deref(), Some(&["sh".to_owned(), "-c".into(), "echo hi".into()][..]));
    assert_eq!(spec.app.working_dir.as_deref(), Some("/srv"));
    assert_eq!(spec.app.restart, RestartPolicy::OnFailure { max_retries: 3 });

    let cases: Vec<(v1::CreateContainerRequest, &str)> = vec![
        (request(r#"{"version":"1"}"#), "app_config: appId"),
        (request(r#"{"appId":"a","entitlements":[{"type":"foo"}]}"#), "app_config: entitlements[0].type"),
        (request("not json"), "app_config: wendy.json"),
        (request(""), "app_config: required"),
        (v1::CreateContainerRequest { image_name: String::new(), ..request(r#"{"appId":"a"}"#) }, "image_name"),
        (v1::CreateContainerRequest { app_name: "../x".into(), ..request(r#"{"appId":"a"}"#) }, "app_name"),
        (v1::CreateContainerRequest { working_dir: "rel".into(), ..request(r#"{"appId":"a"}"#) }, "working_dir"),
        (
            v1::CreateContainerRequest {
                restart_policy: Some(v1_shared::RestartPolicy { mode: 3, on_failure_max_retries: -1 }),
                ..request(r#"{"appId":"a"}"#)
            },
            "restart_policy.on_failure_max_retries",
        ),
        (
            v1::CreateContainerRequest {
                restart_policy: Some(v1_shared::RestartPolicy { mode: 42, on_failure_max_retries: 0 }),
                ..request(r#"{"appId":"a"}"#)
            },
            "restart_policy.mode",
        ),
    ];
    for (req, field) in cases {
        let e = status(create_spec(req).unwrap_err());
        assert_eq!(e.code(), Code::InvalidArgument, "{field}: {e:?}");
        assert!(e.message().starts_with(field), "{field}: {}", e.message());
    }

    // An empty app_config with an app_name is {"appId": app_name}.
    let r = v1::CreateContainerRequest { app_name: "bare".into(), ..request("") };
    assert_eq!(create_spec(r).unwrap().app.name, "bare");
}

#[test]
fn restart_policies_map_as_published() {
    use v1_shared::RestartPolicyMode as M;
    let p =
        |mode: M, n| restart_policy(Some(&v1_shared::RestartPolicy { mode: mode as i32, on_failure_max_retries: n }));
    assert_eq!(restart_policy(None).unwrap(), None);
    assert_eq!(p(M::Default, 0).unwrap(), Some(RestartPolicy::UnlessStopped));
    assert_eq!(p(M::UnlessStopped, 0).unwrap(), Some(RestartPolicy::UnlessStopped));
    assert_eq!(p(M::No, 0).unwrap(), Some(RestartPolicy::No));
    assert_eq!(p(M::OnFailure, 5).unwrap(), Some(RestartPolicy::OnFailure { max_retries: 5 }));
}

fn app(state: AppState, restart: RestartPolicy, stopped_on_purpose: bool, failures: u32) -> AppStatus {
    AppStatus {
        name: "a".into(),
        image: "i".into(),
        state,
        restart,
        stopped_on_purpose,
        version: String::new(),
        volumes: Vec::new(),
        failures,
    }
}

#[test]
fn supervisor_applies_the_policy() {
    use AppState::*;
    let on_failure = |n| RestartPolicy::OnFailure { max_retries: n };
    let us = RestartPolicy::UnlessStopped;
    let rows = [
        (app(Exited { code: 1 }, RestartPolicy::No, false, 0), false, Action::Nothing),
        (app(Stopped, RestartPolicy::No, false, 0), true, Action::Nothing),
        (app(Exited { code: 137 }, us, false, 0), false, Action::RestartAfterFailure),
        (app(Exited { code: 0 }, us, false, 0), false, Action::Start),
        (app(Exited { code: 137 }, us, true, 0), false, Action::Nothing),
        (app(Stopped, us, false, 0), false, Action::Nothing),
        (app(Stopped, us, false, 0), true, Action::Start),
        (app(Stopped, us, true, 0), true, Action::Nothing),
        (app(Running { pid: 1 }, us, false, 0), true, Action::Nothing),
        (app(Exited { code: 1 }, on_failure(2), false, 1), false, Action::RestartAfterFailure),
        (app(Exited { code: 1 }, on_failure(2), false, 2), false, Action::Nothing),
        (app(Exited { code: 1 }, on_failure(0), false, 99), false, Action::RestartAfterFailure),
        (app(Exited { code: 0 }, on_failure(2), false, 0), false, Action::Nothing),
        (app(Stopped, on_failure(2), false, 0), true, Action::Start),
    ];
    for (i, (a, first, want)) in rows.iter().enumerate() {
        assert_eq!(decide(a, *first), *want, "row {i}: {a:?} first={first}");
    }
}

#[test]
fn errors_map_to_codes() {
    let cases = [
        (AppsError::Runtime(RuntimeError::NotFound("a".into())), Code::NotFound),
        (AppsError::Runtime(RuntimeError::ImageNotFound("i".into())), Code::NotFound),
        (AppsError::Runtime(RuntimeError::AlreadyExists("a".into())), Code::AlreadyExists),
        (AppsError::Runtime(RuntimeError::AlreadyRunning("a".into())), Code::FailedPrecondition),
        (AppsError::Runtime(RuntimeError::BadName("..".into())), Code::InvalidArgument),
        (AppsError::Runtime(RuntimeError::Sandbox(SandboxError::NoCommand)), Code::InvalidArgument),
        (AppsError::VolumeNotFound("v".into()), Code::NotFound),
        (AppsError::VolumeInUse { name: "v".into(), apps: vec!["a".into()] }, Code::FailedPrecondition),
        (AppsError::Busy("a".into()), Code::Aborted),
        (AppsError::Unavailable("x".into()), Code::Unavailable),
    ];
    for (e, code) in cases {
        let text = e.to_string();
        assert_eq!(status(e).code(), code, "{text}");
    }
}

#[tokio::test]
async fn locks_serialise_one_app_and_stay_bounded() {
    let locks = AppLocks::default();
    let held = locks.lock("a").await.unwrap();
    assert!(locks.try_lock("a").is_none());
    assert!(locks.try_lock("b").is_some());
    drop(held);
    assert!(locks.try_lock("a").is_some());
    for i in 0..(3 * MAX_IDLE_LOCKS) {
        drop(locks.lock(&format!("app{i}")).await.unwrap());
    }
    assert!(locks.0.lock().unwrap().len() <= MAX_IDLE_LOCKS + 1);
}

#[tokio::test]
async fn volumes_are_scanned_and_sized() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data/sub")).unwrap();
    std::fs::write(dir.path().join("data/a"), b"12345").unwrap();
    std::fs::write(dir.path().join("data/sub/b"), b"123").unwrap();
    std::fs::create_dir(dir.path().join(".hidden")).unwrap();
    std::fs::write(dir.path().join("file"), b"x").unwrap();
    let found = scan_volumes(dir.path()).unwrap();
    assert_eq!(found.keys().collect::<Vec<_>>(), ["data"]);
    assert_eq!(found["data"].1, 8);
    assert!(found["data"].2.ends_with('Z'));
    assert!(scan_volumes(&dir.path().join("missing")).unwrap().is_empty());
}
