//! The admin API: keys are created (shown once), listed without secrets, revoked at once, and
//! each key sees only its own jobs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use support::TestServer;

fn admin_token(server: &TestServer) -> String {
    std::fs::read_to_string(server.data_dir.join("admin.token"))
        .unwrap()
        .trim()
        .to_owned()
}

#[tokio::test]
async fn keys_are_created_listed_revoked_and_scoped() {
    let server = TestServer::start().await;
    let admin = admin_token(&server);
    assert!(admin.starts_with("invka_"));
    assert!(
        server.stdout_text().contains(&admin),
        "the new admin token is shown once"
    );

    // Only the admin token opens the admin API.
    for auth in [
        None,
        Some(server.key.clone()),
        Some("invka_wrong_token_0000000000".to_owned()),
    ] {
        let mut req = server.http.get(server.at("/v1/admin/keys"));
        if let Some(a) = &auth {
            req = req.bearer_auth(a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401, "{auth:?}");
        let body: Value = resp.json().await.unwrap();
        assert!(body["message"].as_str().unwrap().contains("admin token"));
    }

    let resp = server
        .http
        .post(server.at("/v1/admin/keys"))
        .bearer_auth(&admin)
        .json(&json!({"name": "customer-a"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let created: Value = resp.json().await.unwrap();
    let secret = created["key"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("invk_"));
    assert!(secret.starts_with(created["prefix"].as_str().unwrap()));

    let list: Value = server
        .http
        .get(server.at("/v1/admin/keys"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys = list["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "the bootstrap key and the new one");
    assert!(
        !list.to_string().contains(&secret),
        "listings never show a secret"
    );

    // The new key works and sees only its own jobs.
    let mine = server
        .create(&json!({"model_id": "fal-ai/flux/schnell", "input": {"prompt": "mine"}}))
        .await;
    let resp = server
        .http
        .post(server.at("/v1/async-invoke"))
        .bearer_auth(&secret)
        .json(&json!({"model_id": "fal-ai/flux/schnell", "input": {"prompt": "theirs"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let theirs: Value = resp.json().await.unwrap();
    let resp = server
        .http
        .get(server.at(&format!(
            "/v1/async-invoke/{}",
            mine["request_id"].as_str().unwrap()
        )))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        404,
        "another key's job is not found, not forbidden"
    );
    let listed: Value = server
        .http
        .get(server.at("/v1/async-invoke"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = listed["invocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![theirs["request_id"].as_str().unwrap()]);

    // Revoked: the next request fails.
    let id = created["id"].as_str().unwrap();
    let resp = server
        .http
        .delete(server.at(&format!("/v1/admin/keys/{id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.json::<Value>().await.unwrap()["revoked_at"].is_string());
    let resp = server
        .http
        .get(server.at("/v1/async-invoke"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = server
        .http
        .delete(server.at("/v1/admin/keys/not-a-key"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let resp = server
        .http
        .post(server.at("/v1/admin/keys"))
        .bearer_auth(&admin)
        .json(&json!({"name": " "}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
}

#[tokio::test]
async fn keys_of_one_project_share_its_jobs_and_no_one_else_sees_them() {
    let server = TestServer::start().await;
    let admin = admin_token(&server);
    let mut keys = Vec::new();
    for (name, project) in [("a1", Some("acme")), ("a2", Some("acme")), ("b", None)] {
        let mut body = json!({"name": name});
        if let Some(p) = project {
            body["project"] = json!(p);
        }
        let created: Value = server
            .http
            .post(server.at("/v1/admin/keys"))
            .bearer_auth(&admin)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(p) = project {
            assert_eq!(created["project"], p);
        }
        keys.push(created["key"].as_str().unwrap().to_owned());
    }
    let resp = server
        .http
        .post(server.at("/v1/async-invoke"))
        .bearer_auth(&keys[0])
        .json(&json!({"model_id": "fal-ai/flux/schnell", "input": {"prompt": "acme's"}}))
        .send()
        .await
        .unwrap();
    let id = resp.json::<Value>().await.unwrap()["request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let status = |key: String| {
        let (http, url) = (
            server.http.clone(),
            server.at(&format!("/v1/async-invoke/{id}")),
        );
        async move {
            http.get(url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(status(keys[0].clone()).await, 200);
    assert_eq!(status(keys[1].clone()).await, 200, "same project");
    assert_eq!(status(keys[2].clone()).await, 404, "another project");
    assert_eq!(status(server.key.clone()).await, 404, "the default project");
}
