//! The web console's handlers: each page rendered and parsed as HTML (forms present, fields from
//! the model's schema), nothing readable without a session, every action refused without its
//! CSRF token, and the actions' effects seen through the API.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use reqwest::{StatusCode, header};
use scraper::{Html, Selector};
use serde_json::{Value, json};
use support::{KEY, TestApp};

const ADMIN: &str = "invka_lifecycle_test_admin";

fn sel(s: &str) -> Selector {
    Selector::parse(s).unwrap()
}

/// A browser of the console: no redirects followed, its session cookie sent by hand.
struct Browser<'a> {
    app: &'a TestApp,
    http: reqwest::Client,
    cookie: Option<String>,
}

impl<'a> Browser<'a> {
    fn new(app: &'a TestApp) -> Self {
        Self {
            app,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookie: None,
        }
    }

    async fn signed_in(app: &'a TestApp, key: &str) -> Self {
        Self::signed_in_at(app, key, "/console").await
    }

    /// Signed in to the console served at `prefix`.
    async fn signed_in_at(app: &'a TestApp, key: &str, prefix: &str) -> Self {
        let mut b = Self::new(app);
        let r = b
            .post_raw(&format!("{prefix}/sign-in"), &[("key", key)])
            .await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(
            r.headers()[header::LOCATION],
            format!("{prefix}/overview").as_str()
        );
        let set = r.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
        let path = format!("Path={prefix};");
        for attr in ["HttpOnly", "SameSite=Strict", &path] {
            assert!(set.contains(attr), "{set}");
        }
        b.cookie = Some(set.split(';').next().unwrap().to_owned());
        b
    }

    fn with_cookie(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.cookie {
            Some(c) => r.header(header::COOKIE, c),
            None => r,
        }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.with_cookie(self.http.get(format!("{}{path}", self.app.url)))
            .send()
            .await
            .unwrap()
    }

    /// A page that must render: its parsed HTML.
    async fn page(&self, path: &str) -> Html {
        let r = self.get(path).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let csp = r.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe"),
            "{csp}"
        );
        Html::parse_document(&r.text().await.unwrap())
    }

    async fn post_raw(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.with_cookie(self.http.post(format!("{}{path}", self.app.url)))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// The CSRF token of this session, from a page's forms.
    async fn csrf(&self) -> String {
        let page = self.page("/console/overview").await;
        let input = page
            .select(&sel("input[name=csrf]"))
            .next()
            .expect("a csrf field");
        input.value().attr("value").unwrap().to_owned()
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let token = self.csrf().await;
        let mut all = vec![("csrf", token.as_str())];
        all.extend_from_slice(form);
        self.post_raw(path, &all).await
    }
}

/// The list `field` of the API's answer to a GET of `path` with `token`.
async fn api_list(app: &TestApp, path: &str, token: &str, field: &str) -> Vec<Value> {
    let r = app
        .http
        .get(format!("{}{path}", app.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    body[field].as_array().cloned().unwrap_or_default()
}

async fn api_jobs(app: &TestApp) -> Vec<Value> {
    api_list(app, "/v1/async-invoke", KEY, "invocations").await
}

/// The text of the first element `selector` finds.
fn text(page: &Html, selector: &str) -> String {
    page.select(&sel(selector))
        .next()
        .unwrap_or_else(|| panic!("no {selector}"))
        .text()
        .collect()
}

fn location(r: &reqwest::Response) -> String {
    r.headers()[header::LOCATION].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn no_page_is_readable_without_a_session() {
    let app = TestApp::start(|_| {}).await;
    let id = app.submit_image().await;
    let mut forged = Browser::new(&app);
    forged.cookie = Some(format!(
        "invokd_console=k.{}.9999999999.00",
        "ab".repeat(32)
    ));
    for b in [Browser::new(&app), forged] {
        for path in [
            "/console/",
            "/console/overview",
            "/console/overview/live",
            "/console/jobs",
            "/console/jobs/live",
            &format!("/console/jobs/{id}"),
            &format!("/console/jobs/{id}/live"),
            "/console/playground",
            "/console/gallery",
            "/console/admin/keys",
            "/console/admin/workers",
            "/console/admin/workers/live",
        ] {
            let r = b.get(path).await;
            assert_eq!(r.status(), StatusCode::SEE_OTHER, "{path}");
            assert_eq!(location(&r), "/console/sign-in", "{path}");
            assert!(
                !r.text().await.unwrap().contains(&id),
                "{path} shows nothing"
            );
        }
        let r = b.post_raw(&format!("/console/jobs/{id}/cancel"), &[]).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
    }
    let r = Browser::new(&app)
        .http
        .get(format!("{}/console/jobs/live", app.url))
        .header("hx-request", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "htmx is told, not redirected"
    );
    assert_eq!(r.headers()["hx-redirect"], "/console/sign-in");
    let status = app.job(&id).await["status"].clone();
    assert!(
        status == "QUEUED" || status == "IN_PROGRESS",
        "not canceled: {status}"
    );
    let sign_in = Browser::new(&app).page("/console/sign-in").await;
    let key = sign_in
        .select(&sel("form input#key[name=key][type=password]"))
        .count();
    assert_eq!(key, 1, "the sign-in form asks for the key");
    assert_eq!(sign_in.select(&sel("label[for=key]")).count(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_wrong_key_gets_a_clear_message_and_no_session() {
    let app = TestApp::start(|_| {}).await;
    let b = Browser::new(&app);
    for wrong in ["invk_nope", "", ADMIN.trim_end_matches('n')] {
        let r = b.post_raw("/console/sign-in", &[("key", wrong)]).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{wrong:?}");
        assert!(r.headers().get(header::SET_COOKIE).is_none());
        let page = Html::parse_document(&r.text().await.unwrap());
        let error: String = page
            .select(&sel("#sign-in-error"))
            .next()
            .unwrap()
            .text()
            .collect();
        assert_eq!(error, "That key is not valid. Check it and try again.");
    }
    let r = b
        .http
        .post(format!("{}/console/sign-in", app.url))
        .header("sec-fetch-site", "cross-site")
        .form(&[("key", KEY)])
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "a sign-in posted by another site"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_playground_form_is_made_from_the_schema() {
    let app = TestApp::start(|_| {}).await;
    let b = Browser::signed_in(&app, KEY).await;
    let page = b
        .page("/console/playground?model=fal-ai/flux/schnell")
        .await;
    let form = sel("form#playground[method=post]");
    assert_eq!(page.select(&form).count(), 1);
    let one = |s: &str| {
        let found: Vec<_> = page.select(&sel(s)).collect();
        assert_eq!(found.len(), 1, "{s}");
        found[0].value().clone()
    };
    one("form#playground input[type=hidden][name=csrf]");
    one("form#playground input[type=hidden][name=model][value='fal-ai/flux/schnell']");
    one("textarea#f-prompt[name='input.prompt'][required]");
    let steps = one("#more input#f-num_images[type=number][name='input.num_images']");
    assert_eq!(
        (steps.attr("min"), steps.attr("max"), steps.attr("step")),
        (Some("1"), Some("4"), Some("1"))
    );
    one("#more input#f-enable_safety_checker[type=checkbox][role=switch][checked]");
    one("#more input#f-seed[type=number][min='0']");
    let formats: Vec<String> = page
        .select(&sel("select#f-output_format option"))
        .map(|o| o.text().collect())
        .collect();
    assert_eq!(formats, ["(default)", "jpeg", "png"]);
    let sizes: Vec<&str> = page
        .select(&sel("select#f-image_size option"))
        .filter_map(|o| o.value().attr("value"))
        .collect();
    assert!(
        sizes.contains(&"landscape_4_3") && sizes.contains(&"custom"),
        "{sizes:?}"
    );
    one("input#f-image_size-width[name='input.image_size.width'][max='14142']");
    one("textarea#raw-json[name=raw]");
    // Every field has its label.
    for input in page.select(&sel("form#playground input:not([type=hidden]), form#playground select, form#playground textarea")) {
        let id = input.value().id().expect("fields have ids");
        let label = sel(&format!("label[for='{id}']"));
        assert_eq!(page.select(&label).count(), 1, "label of {id}");
    }
    // An audio model has its own fields.
    let audio = b
        .page("/console/playground?model=fal-ai/stable-audio-25/text-to-audio")
        .await;
    let secs = audio
        .select(&sel("input#f-seconds_total[type=number][max='190']"))
        .count();
    assert_eq!(secs, 1);
    let r = b.get("/console/playground?model=nope/nope").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    app.stop().await;
}

#[tokio::test]
async fn actions_without_their_csrf_token_are_refused_and_store_nothing() {
    let app = TestApp::start(|_| {}).await;
    let b = Browser::signed_in(&app, KEY).await;
    let other = Browser::signed_in(&app, ADMIN).await;
    let form = [("model", "fal-ai/flux/schnell"), ("input.prompt", "a cat")];
    let r = b.post_raw("/console/playground", &form).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "no token");
    let others = other.csrf().await;
    let mut with_other = vec![("csrf", others.as_str())];
    with_other.extend_from_slice(&form);
    let r = b.post_raw("/console/playground", &with_other).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "another session's token");
    let token = b.csrf().await;
    let mut good = vec![("csrf", token.as_str())];
    good.extend_from_slice(&form);
    let r = b
        .with_cookie(b.http.post(format!("{}/console/playground", app.url)))
        .header("sec-fetch-site", "cross-site")
        .form(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "sent from another site");
    assert!(api_jobs(&app).await.is_empty(), "nothing stored");
    // The same form with its token makes the job.
    let r = b.post_raw("/console/playground", &good).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(api_jobs(&app).await.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn the_playground_makes_a_real_job_whose_page_shows_its_outputs() {
    let app = TestApp::start(|_| {}).await;
    let b = Browser::signed_in(&app, KEY).await;
    let r = b
        .post(
            "/console/playground",
            &[
                ("model", "fal-ai/flux/schnell"),
                ("input.prompt", "a lighthouse"),
                ("input.image_size", "custom"),
                ("input.image_size.width", "320"),
                ("input.image_size.height", "200"),
                ("bool.enable_safety_checker", "1"),
                ("input.seed", ""),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = location(&r);
    let id = to.strip_prefix("/console/jobs/").unwrap().to_owned();
    let job = app.job(&id).await;
    assert_eq!(job["tags"], json!([{"key": "source", "value": "console"}]));
    // Not ended yet (the scripted run waits for the test): the page polls its live part.
    let page = b.page(&to).await;
    let input: Value = serde_json::from_str(&text(&page, "#input-json")).unwrap();
    assert_eq!(input["image_size"], json!({"width": 320, "height": 200}));
    assert_eq!(input["enable_safety_checker"], false);
    assert_eq!(input["prompt"], "a lighthouse");
    assert!(input.get("seed").is_none(), "an empty field is left out");
    assert_eq!(page.select(&sel("#job-live[data-live][hx-get]")).count(), 1);
    assert_eq!(page.select(&sel("#job-live form #cancel")).count(), 1);
    let status = text(&page, "#job-status");
    assert!(
        ["QUEUED", "IN_PROGRESS"].contains(&status.as_str()),
        "{status}"
    );
    for code in ["#code-curl", "#code-pydo", "#code-fal"] {
        let text: String = page.select(&sel(code)).next().unwrap().text().collect();
        assert!(
            text.contains("fal-ai/flux/schnell") && text.contains("a lighthouse"),
            "{code}: {text}"
        );
    }
    let run = app.next_run().await;
    run.log("drawing").await;
    let png = run.put_file("0.png", b"\x89PNG fake").await.unwrap();
    let audio = run.put_file("1.wav", b"RIFF fake").await.unwrap();
    run.complete(
        json!({
            "images": [{"url": png, "content_type": "image/png", "width": 320, "height": 200, "file_size": 9}],
            "audio": {"url": audio, "content_type": "audio/wav", "file_size": 9}
        })
        .as_object()
        .unwrap()
        .clone(),
    );
    app.wait_for(&id, "COMPLETED").await;
    let live = b.page(&format!("{to}/live")).await;
    assert_eq!(
        live.select(&sel("#job-live[data-live]")).count(),
        0,
        "no polling once ended"
    );
    assert_eq!(live.select(&sel("#cancel")).count(), 0, "nothing to cancel");
    let img = live
        .select(&sel("figure img"))
        .next()
        .expect("the image")
        .value()
        .clone();
    assert_eq!(
        (img.attr("width"), img.attr("height")),
        (Some("320"), Some("200"))
    );
    let src = img.attr("src").unwrap();
    assert!(
        src.contains(&format!("/files/{id}/")) && src.contains("sig="),
        "{src}"
    );
    let file = app.http.get(src).send().await.unwrap();
    assert_eq!(file.status(), 200, "the signed URL serves the file");
    let player = live
        .select(&sel("audio[controls]"))
        .next()
        .expect("a player")
        .value()
        .clone();
    assert!(player.attr("src").unwrap().contains("sig="));
    let logs: String = live.select(&sel("#logs")).next().unwrap().text().collect();
    assert!(logs.contains("drawing"), "{logs}");
    let gallery = b.page("/console/gallery").await;
    assert_eq!(
        gallery
            .select(&sel(&format!("a[href='/console/jobs/{id}'] img")))
            .count(),
        1
    );
    assert_eq!(gallery.select(&sel("audio[controls]")).count(), 1);
    // Run again with an edited input: a new job of the same model.
    let r = b
        .post(
            &format!("/console/jobs/{id}/rerun"),
            &[("input", r#"{"prompt": "again"}"#)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let again = location(&r)
        .strip_prefix("/console/jobs/")
        .unwrap()
        .to_owned();
    assert_ne!(again, id);
    let page = b.page(&format!("/console/jobs/{again}")).await;
    let input: Value = serde_json::from_str(&text(&page, "#input-json")).unwrap();
    assert_eq!(input["prompt"], "again");
    app.stop().await;
}

#[tokio::test]
async fn invalid_input_is_refused_with_its_reason_and_nothing_stored() {
    let app = TestApp::start(|_| {}).await;
    let b = Browser::signed_in(&app, KEY).await;
    for (form, says) in [
        (
            vec![("input.prompt", "x"), ("input.num_images", "10")],
            "num_images",
        ),
        (
            vec![("input.prompt", "x"), ("input.num_images", "two")],
            "num_images",
        ),
        (vec![("raw", "{not json")], "raw JSON"),
        (vec![("raw", "[1]")], "JSON object"),
    ] {
        let mut all = vec![("model", "fal-ai/flux/schnell")];
        all.extend(form);
        let r = b.post("/console/playground", &all).await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{all:?}");
        let page = Html::parse_document(&r.text().await.unwrap());
        let errors: String = page
            .select(&sel("#form-errors"))
            .next()
            .unwrap()
            .text()
            .collect();
        assert!(errors.contains(says), "{errors}");
        assert_eq!(
            page.select(&sel("form#playground")).count(),
            1,
            "the form again"
        );
    }
    assert!(api_jobs(&app).await.is_empty());
    let r = b.get("/console/jobs?status=DONE").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let page = Html::parse_document(&r.text().await.unwrap());
    assert!(text(&page, "p.error").starts_with("status: \"DONE\" is not one of"));
    app.stop().await;
}

#[tokio::test]
async fn the_jobs_list_filters_and_cancels_a_selection() {
    let app = TestApp::start(|_| {}).await;
    let b = Browser::signed_in(&app, KEY).await;
    let flux = app.submit_image().await;
    let audio = app
        .submit(json!({"model_id": "fal-ai/stable-audio-25/text-to-audio", "input": {"prompt": "drums"}, "tags": [{"key": "team", "value": "a"}]}))
        .await;
    let ids = |page: &Html| -> Vec<String> {
        page.select(&sel("table.jobs a.mono"))
            .map(|a| a.text().collect())
            .collect()
    };
    let all = b.page("/console/jobs").await;
    assert_eq!(ids(&all), [audio.as_str(), flux.as_str()], "newest first");
    assert_eq!(all.select(&sel("#jobs[data-live][hx-get]")).count(), 1);
    let by_model = b.page("/console/jobs?model=fal-ai%2Fflux%2Fschnell").await;
    assert_eq!(ids(&by_model), [flux.as_str()]);
    let selected: Vec<_> = by_model
        .select(&sel("select#model option[selected]"))
        .collect();
    assert_eq!(
        selected[0].value().attr("value"),
        Some("fal-ai/flux/schnell"),
        "the filter is kept"
    );
    let live_url = by_model
        .select(&sel("#jobs"))
        .next()
        .unwrap()
        .value()
        .attr("hx-get")
        .unwrap()
        .to_owned();
    assert!(
        live_url.contains("model=fal-ai%2Fflux%2Fschnell"),
        "{live_url}"
    );
    let rows = Html::parse_fragment(&b.get(&live_url).await.text().await.unwrap());
    assert_eq!(ids(&rows), [flux.as_str()]);
    assert_eq!(
        ids(&b.page("/console/jobs?tag=team%3Da").await),
        [audio.as_str()]
    );
    assert_eq!(
        ids(&b.page("/console/jobs?text=DRUM").await),
        [audio.as_str()]
    );
    assert_eq!(
        ids(&b.page("/console/jobs?status=COMPLETED").await),
        Vec::<String>::new()
    );
    assert_eq!(
        ids(&b
            .page("/console/jobs?since=2000-01-01T00:00&until=2000-01-02T00:00")
            .await)
        .len(),
        0
    );
    let r = b
        .post(
            "/console/jobs/cancel",
            &[("id", &flux), ("id", &audio), ("back", "")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/console/jobs?canceled=2");
    for id in [&flux, &audio] {
        app.wait_for(id, "CANCELED").await;
    }
    app.stop().await;
}

#[tokio::test]
async fn the_admin_manages_keys_and_a_revoked_key_ends_its_sessions() {
    let app = TestApp::start(|_| {}).await;
    let user = Browser::signed_in(&app, KEY).await;
    let r = user.get("/console/admin/keys").await;
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "no admin pages for a key"
    );
    let r = user
        .post("/console/admin/keys", &[("name", "sneaky")])
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let admin = Browser::signed_in(&app, ADMIN).await;
    let keys = admin.page("/console/admin/keys").await;
    assert_eq!(
        keys.select(&sel("form#create-key input[name=name][required]"))
            .count(),
        1
    );
    assert_eq!(keys.select(&sel("#new-key-secret")).count(), 0);
    let r = admin
        .post("/console/admin/keys", &[("name", " "), ("project", "")])
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let r = admin
        .post(
            "/console/admin/keys",
            &[("name", "ci"), ("project", "team-b")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let page = Html::parse_document(&r.text().await.unwrap());
    let secret: String = page
        .select(&sel("#new-key-secret"))
        .next()
        .unwrap()
        .text()
        .collect();
    let row = page
        .select(&sel("tr[data-key=ci]"))
        .next()
        .expect("the new key is listed");
    let revoke = row
        .select(&sel("form"))
        .next()
        .unwrap()
        .value()
        .attr("action")
        .unwrap()
        .to_owned();
    let again = admin.page("/console/admin/keys").await;
    assert!(!again.html().contains(&secret), "shown once");
    let projects: Vec<String> = again
        .select(&sel("#projects-table tbody tr"))
        .map(|r| r.text().collect::<Vec<_>>().join("|"))
        .collect();
    assert_eq!(projects, ["default|1|0", "team-b|1|0"]);
    // The new key signs in to its own project, which sees none of the first key's jobs.
    let first = app.submit_image().await;
    let b = Browser::signed_in(&app, &secret).await;
    assert!(!b.page("/console/jobs").await.html().contains(&first));
    assert_eq!(
        b.get(&format!("/console/jobs/{first}")).await.status(),
        StatusCode::NOT_FOUND
    );
    // The admin sees every project's.
    assert!(admin.page("/console/jobs").await.html().contains(&first));
    let r = admin.post(&revoke, &[]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = b.get("/console/overview").await;
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "the revoked key's session ended"
    );
    assert_eq!(location(&r), "/console/sign-in");
    // Sign-out clears the cookie.
    let r = user.post("/console/sign-out", &[]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cleared = r.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(
        cleared.starts_with("invokd_console=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    app.stop().await;
}

/// The cells of each row of the first table `selector` finds, trimmed.
fn rows(page: &Html, selector: &str) -> Vec<Vec<String>> {
    page.select(&sel(selector))
        .map(|r| {
            r.select(&sel("th, td"))
                .map(|c| c.text().collect::<String>().trim().to_owned())
                .collect()
        })
        .collect()
}

/// A worker's heartbeat with `token`, holding no jobs: its status.
async fn heartbeat(app: &TestApp, token: &str) -> StatusCode {
    let worker = json!({"id": "w-1", "name": "gpu-box-1", "version": "test 1",
                        "models": [WORKER_MODEL], "slots": 2, "labels": {"gpu": "A100"}});
    app.http
        .post(format!("{}/v1/worker/heartbeat", app.url))
        .bearer_auth(token)
        .json(&json!({"worker": worker, "jobs": []}))
        .send()
        .await
        .unwrap()
        .status()
}

const WORKER_MODEL: &str = "fal-ai/flux/schnell";

#[tokio::test]
async fn the_admin_makes_worker_tokens_and_sees_the_workers() {
    let app = TestApp::start(|c| {
        c.routes.push(invokd_server::provider_routes::Route {
            pattern: WORKER_MODEL.into(),
            provider: "workers".into(),
        })
    })
    .await;
    let user = Browser::signed_in(&app, KEY).await;
    for path in ["/console/admin/workers", "/console/admin/workers/live"] {
        assert_eq!(
            user.get(path).await.status(),
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    let r = user
        .post(
            "/console/admin/workers/tokens",
            &[("name", "sneaky"), ("models", "*")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(
        !user
            .page("/console/overview")
            .await
            .html()
            .contains("/admin/workers"),
        "no link for a key"
    );
    let admin = Browser::signed_in(&app, ADMIN).await;
    let overview = admin.page("/console/overview").await;
    assert_eq!(
        overview
            .select(&sel("header nav a[href='/console/admin/workers']"))
            .count(),
        1
    );
    let page = admin.page("/console/admin/workers").await;
    assert_eq!(
        page.select(&sel(
            "#workers[data-live][hx-get='/console/admin/workers/live'] .empty"
        ))
        .count(),
        1
    );
    for field in ["name", "models"] {
        let form = format!("form#create-token input[name={field}][required]");
        assert_eq!(page.select(&sel(&form)).count(), 1, "{field}");
        let id = format!("token-{field}");
        assert_eq!(page.select(&sel(&format!("label[for={id}]"))).count(), 1);
    }
    assert_eq!(page.select(&sel("#new-token-secret")).count(), 0);
    // Refused without the CSRF token, or with a pattern that is not one.
    let r = admin
        .post_raw(
            "/console/admin/workers/tokens",
            &[("name", "box"), ("models", WORKER_MODEL)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = admin
        .post(
            "/console/admin/workers/tokens",
            &[("name", "box"), ("models", " ")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let refused = Html::parse_document(&r.text().await.unwrap());
    assert!(!text(&refused, ".error[role=alert]").is_empty());
    assert!(
        api_list(&app, "/v1/admin/worker-tokens", ADMIN, "tokens")
            .await
            .is_empty(),
        "nothing stored"
    );
    let r = admin
        .post(
            "/console/admin/workers/tokens",
            &[
                ("name", "gpu-box-1"),
                ("models", &format!("{WORKER_MODEL}, acme/*")),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let page = Html::parse_document(&r.text().await.unwrap());
    let secret = text(&page, "#new-token-secret");
    assert!(secret.starts_with("invw_"), "{secret}");
    let stored = api_list(&app, "/v1/admin/worker-tokens", ADMIN, "tokens").await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    let row = &rows(&page, "#tokens tr[data-token=gpu-box-1]")[0];
    assert_eq!(
        row[2],
        format!("acme/*, {WORKER_MODEL}"),
        "the patterns, sorted"
    );
    let revoke = page
        .select(&sel("#tokens tr[data-token=gpu-box-1] form"))
        .next()
        .expect("a revoke form")
        .value()
        .attr("action")
        .unwrap()
        .to_owned();
    assert!(
        !admin
            .page("/console/admin/workers")
            .await
            .html()
            .contains(&secret),
        "shown once"
    );
    // A worker with the token is seen, live, with what it said of itself.
    assert_eq!(heartbeat(&app, &secret).await, StatusCode::OK);
    let live = Html::parse_fragment(
        &admin
            .get("/console/admin/workers/live")
            .await
            .text()
            .await
            .unwrap(),
    );
    let row = &rows(&live, "#workers tr[data-worker=w-1]")[0];
    assert_eq!(
        row[..9],
        [
            "gpu-box-1",
            "w-1",
            "test 1",
            WORKER_MODEL,
            "2",
            "0",
            "0",
            "0",
            "gpu=A100"
        ]
    );
    assert!(row[9].starts_with("connected"), "{row:?}");
    // The overview says the model is run by workers, one connected with two free slots.
    let overview = user.page("/console/overview").await;
    let line = rows(&overview, "#overview tbody tr")
        .into_iter()
        .find(|r| r[0] == WORKER_MODEL)
        .expect("a line for the workers' model");
    assert_eq!((line[1].as_str(), line[2].as_str()), ("workers", "1 · 2"));
    // Revoke: refused without the CSRF token; then the token's next call is refused.
    let r = admin.post_raw(&revoke, &[]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(heartbeat(&app, &secret).await, StatusCode::OK);
    let r = admin.post(&revoke, &[]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/console/admin/workers");
    assert_eq!(heartbeat(&app, &secret).await, StatusCode::UNAUTHORIZED);
    let page = admin.page("/console/admin/workers").await;
    let row = &rows(&page, "#tokens tr[data-token=gpu-box-1]")[0];
    assert!(!row[4].is_empty(), "revoked at: {row:?}");
    assert_eq!(
        page.select(&sel("#tokens tr[data-token=gpu-box-1] form"))
            .count(),
        0
    );
    app.stop().await;
}

#[tokio::test]
async fn the_overview_counts_per_model_and_assets_are_served() {
    let app = TestApp::start(|_| {}).await;
    let b = Browser::signed_in(&app, KEY).await;
    let empty = b.page("/console/overview").await;
    assert_eq!(empty.select(&sel("#overview[data-live] .empty")).count(), 1);
    let done = app.submit_image().await;
    let run = app.next_run().await;
    run.complete(serde_json::Map::new());
    app.wait_for(&done, "COMPLETED").await;
    app.submit_image().await;
    let page = b.page("/console/overview").await;
    let row = rows(&page, "#overview tbody tr").remove(0);
    assert_eq!(row[0], "fal-ai/flux/schnell");
    assert_eq!(row[1], "scripted");
    // Queued 1 (or running: the dispatcher may have claimed it), completed 1, failed 0.
    assert_eq!(
        row[2].parse::<u32>().unwrap() + row[3].parse::<u32>().unwrap(),
        1,
        "{row:?}"
    );
    assert_eq!((row[4].as_str(), row[5].as_str()), ("1", "0"), "{row:?}");
    assert_eq!(row[6], "0", "none canceled");
    assert_ne!(row[8], "-", "a p50 run time");
    let scripts: Vec<String> = page
        .select(&sel("script"))
        .map(|s| s.value().attr("src").unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        scripts,
        [
            "/console/assets/htmx-2.0.11.min.js",
            "/console/assets/console.js"
        ]
    );
    for src in scripts {
        let r = b.get(&src).await;
        assert_eq!(r.status(), 200);
        assert!(
            r.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/javascript")
        );
    }
    assert_eq!(
        Browser::new(&app)
            .get("/console/assets/nope.js")
            .await
            .status(),
        404
    );
    app.stop().await;
}

#[tokio::test]
async fn the_console_can_be_served_at_a_path_of_its_own_or_not_at_all() {
    let app = TestApp::start(|c| c.console_path = Some("/ops/invokd".into())).await;
    let b = Browser::signed_in_at(&app, KEY, "/ops/invokd").await;
    let page = b.page("/ops/invokd/jobs").await;
    let links: Vec<&str> = page
        .select(&sel("nav a"))
        .filter_map(|a| a.value().attr("href"))
        .collect();
    assert_eq!(
        links,
        [
            "/ops/invokd/overview",
            "/ops/invokd/jobs",
            "/ops/invokd/playground",
            "/ops/invokd/gallery"
        ]
    );
    let live = page.select(&sel("#jobs")).next().unwrap();
    assert!(
        live.value()
            .attr("hx-get")
            .unwrap()
            .starts_with("/ops/invokd/jobs/live")
    );
    assert_eq!(b.get("/console/jobs").await.status(), StatusCode::NOT_FOUND);
    let r = Browser::new(&app).get("/ops/invokd/jobs").await;
    assert_eq!(location(&r), "/ops/invokd/sign-in");
    app.stop().await;

    let app = TestApp::start(|c| c.console_path = None).await;
    let r = Browser::new(&app).get("/console/sign-in").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    app.stop().await;
}
