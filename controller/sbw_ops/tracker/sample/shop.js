/* Sample shop glue: where the ingest API is, and a demo sign-in that stores a fake Cognito id token. */
(function () {
  "use strict";
  const params = new URLSearchParams(location.search);
  // ?endpoint=...&flush_ms=... on the first page; remembered for the tab's other pages
  const setting = (name, fallback) => {
    const value = params.get(name) || sessionStorage.getItem("sbw_demo_" + name) || fallback;
    sessionStorage.setItem("sbw_demo_" + name, value);
    return value;
  };
  const endpoint = setting("endpoint", "http://127.0.0.1:8080/clickstream");
  const flushMs = Number(setting("flush_ms", "5000"));
  // tests: ?batch_size=...&timeout_ms=... (the tracker's batchSize and requestTimeout)
  const batchSize = Number(setting("batch_size", "10"));
  const timeoutMs = Number(setting("timeout_ms", "10000"));
  const APP_CLIENT = "demo-app-client";
  const PREFIX = "CognitoIdentityServiceProvider." + APP_CLIENT + ".";

  function b64url(text) {
    return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  // What Amplify keeps after a Cognito sign-in; unsigned here (the tracker does not verify).
  function signIn(sub) {
    const payload = { sub: sub, token_use: "id", "cognito:username": "demo-user", exp: Math.floor(Date.now() / 1000) + 3600 };
    const token = b64url(JSON.stringify({ alg: "none", typ: "JWT" })) + "." + b64url(JSON.stringify(payload)) + ".demo";
    localStorage.setItem(PREFIX + "LastAuthUser", "demo-user");
    localStorage.setItem(PREFIX + "demo-user.idToken", token);
  }

  function signOut() {
    localStorage.removeItem(PREFIX + "LastAuthUser");
    localStorage.removeItem(PREFIX + "demo-user.idToken");
  }

  window.sampleShop = { endpoint: endpoint, signIn: signIn, signOut: signOut };
  window.clickstream.init({
    endpoint: endpoint,
    flushInterval: flushMs,
    batchSize: batchSize,
    requestTimeout: timeoutMs,
    cognitoClientId: APP_CLIENT,
    debug: params.has("debug"),
  });

  document.addEventListener("DOMContentLoaded", () => {
    const login = document.getElementById("login");
    const logout = document.getElementById("logout");
    if (login) {
      login.addEventListener("click", () => {
        signIn("0f8e2a52-6f61-4c8b-9d5c-3f1c2b9a7d10");
        window.clickstream.track("login");
      });
    }
    if (logout) {
      logout.addEventListener("click", () => {
        window.clickstream.track("logout"); // sent by the user who logs out
        signOut();
      });
    }
    const search = document.getElementById("search-form");
    if (search) search.addEventListener("submit", (event) => event.preventDefault());
  });
})();
