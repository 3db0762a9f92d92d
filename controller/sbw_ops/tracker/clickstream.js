/*! clickstream.js: the SBW shop's clickstream tracker. Dependency-free, ES2017, no build step.
 *
 * Sends events of the clickstream contract (schemas/clickstream-event.v1.json) to the ingest API
 * (POST {"events": [...]}, application/json). Keeps a client id (localStorage, cookie fallback) and a
 * session id (new after 30 minutes without activity) in the browser, flags the client's first
 * session (is_first_visit), reads the login state from the Cognito id token when there is one (the
 * JWT payload's `sub`; not verified here, ingest and the warehouse treat it as a claim), takes product
 * context from data attributes (data-product-id, -name, -category, -brand, -price, -discount-price,
 * -url-path), batches events (size or time) and delivers the rest with sendBeacon / fetch keepalive
 * when the page is hidden. Every event gets its UUIDv7 `event_id` when it is tracked and keeps it
 * across retries and page loads: events wait in a bounded outbox (localStorage, else sessionStorage)
 * until ingest has answered, so a re-sent event is stored once (the warehouse keeps each id once).
 * Each request carries `sent_at` (this clock at sending): ingest corrects event times for it.
 * Contract v1.1: every event carries its page (URL without query secrets, path, title, referrer),
 * campaign (utm_*, which click id was present, never the id) and client context (screen, viewport,
 * locale, time zone); SPA route changes (pushState / replaceState / popstate) are page views with
 * the previous page as referrer. `requireConsent` tracks nothing (no id, no storage, no request)
 * until `consent(true)`; `respectDoNotTrack` tracks nothing when the browser sends Do-Not-Track.
 *
 *   <script src="/clickstream.js" data-endpoint="https://abc.execute-api.ap-southeast-1.amazonaws.com/clickstream"></script>
 *   clickstream.track("add_to_cart", { element: button })      // product context from the closest [data-product-id]
 *   clickstream.track("purchase", { product: { id: "1001", name: "...", price: 12.5 } })
 */
(function (root) {
  "use strict";

  const VERSION = "1.1.0";
  const DENIED_QUERY_PARAMS = [
    "token", "password", "passwd", "pwd", "secret", "email", "mail", "key", "session", "sid", "auth",
    "code", "otp", "pin", "jwt", "signature", "sig", "credential", "phone", "mobile", "tel", "ssn",
    "card", "iban", "account", "address", "firstname", "lastname", "fullname", "birth", "dob", "user",
  ];
  // Ad click ids: which one was present is sent (click_id_type), the id itself never.
  const CLICK_IDS = ["gclid", "gbraid", "wbraid", "dclid", "gclsrc", "msclkid", "fbclid", "ttclid", "twclid",
    "li_fat_id", "yclid", "epik", "sccid", "rdt_cid", "igshid"];
  const UTM_FIELDS = ["utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content"];
  const EMAIL_VALUE = /[^@\s]+@[^@\s]+\.[a-z]{2,}/i;
  const JWT_VALUE = /^eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\./;
  const LOCALE = /^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$/;
  const TIME_ZONE = /^[A-Za-z0-9_+/-]{1,64}$/;
  const DEFAULTS = {
    endpoint: null, // ingest URL (required)
    batchSize: 10, // flush when this many events are queued
    flushInterval: 5000, // ... or this many ms after the first queued event
    sessionTimeoutMinutes: 30, // inactivity that ends a session
    autoPageView: true, // page_view (and product_view on a product page) at init
    trackHistory: true, // page_view on pushState / replaceState / popstate when the page changes (SPA routes)
    trackClicks: true, // clicks on [data-track="event_name"] elements
    storagePrefix: "sbw_cs_",
    cookieDomain: null, // e.g. ".shop.example" to share the ids across subdomains
    cognitoClientId: null, // Cognito app client id, to pick the right token when several exist
    idToken: null, // function returning the current Cognito id token (overrides the lookup)
    transport: "auto", // page hide: "auto" (fetch keepalive, else sendBeacon), "beacon" (same-origin API) or "fetch"
    maxRetries: 2, // re-sends of a batch after a network error, a timeout or 5xx/429
    requestTimeout: 10000, // ms before a request without answer is aborted and retried
    outboxLimit: 1000, // events kept for re-sending at most (the oldest go first)
    requireConsent: false, // true: nothing is tracked, stored or sent until consent(true)
    respectDoNotTrack: false, // true: nothing is tracked when the browser says Do-Not-Track
    // Query parameters removed from page_url / page_referrer: a parameter with a word of its name
    // (split at - _ . and camelCase) that is, starts or ends with one of these (access_token,
    // sessionId, apikey, userEmail), a click id, or a value that looks like an email address or a JWT.
    deniedQueryParams: DENIED_QUERY_PARAMS.slice(),
    allowedQueryParams: [], // names kept whatever the rules say (exact, case-insensitive), e.g. ["promo_code"]
    debug: false,
  };
  const EVENT_NAME = /^[a-z][a-z0-9_]{0,49}$/;
  const TEXT_LIMITS = {
    context_product_id: 64,
    context_product_name: 256,
    context_product_category: 128,
    context_product_brand: 128,
    context_product_url_path: 2048,
    page_url: 2048,
    page_path: 2048,
    page_title: 512,
    page_referrer: 2048,
    utm_source: 256,
    utm_medium: 256,
    utm_campaign: 256,
    utm_term: 256,
    utm_content: 256,
  };
  const UNLOAD_CHUNK = 50; // keepalive bodies must stay under 64 KiB in total
  const MAX_BATCH = 500; // the ingest limit per request

  let config = null;
  let queue = []; // events of this page not sent yet
  let outbox = []; // every event not yet answered by ingest (persisted, re-sent on the next page load)
  let timer = null;
  let lastPage = null; // path + query of the last page view (a route change is a new one)
  let lastPageUrl = null; // the last page view's (cleaned) URL: the referrer of an SPA route change
  let pageReferrer; // this page's referrer: document.referrer until the first route change
  let consented = false;
  let started = false; // ids, outbox and listeners set up (after consent when it is required)
  const storage = {};

  // --- storage: localStorage first, a first-party cookie when it is unavailable ---------------
  function readCookie(name) {
    const prefix = name + "=";
    for (const part of (document.cookie || "").split(";")) {
      const item = part.trim();
      if (item.indexOf(prefix) === 0) return decodeURIComponent(item.slice(prefix.length));
    }
    return null;
  }

  function writeCookie(name, value, days) {
    let cookie = name + "=" + encodeURIComponent(value) + "; path=/; SameSite=Lax; max-age=" + Math.round(days * 86400);
    if (config && config.cookieDomain) cookie += "; domain=" + config.cookieDomain;
    if (location.protocol === "https:") cookie += "; Secure";
    document.cookie = cookie;
  }

  storage.get = function (key) {
    const name = config.storagePrefix + key;
    try {
      const value = root.localStorage.getItem(name);
      if (value !== null) return value;
    } catch (e) {
      /* blocked storage: fall back to the cookie */
    }
    return readCookie(name);
  };

  storage.set = function (key, value, days) {
    const name = config.storagePrefix + key;
    try {
      root.localStorage.setItem(name, value);
      if (root.localStorage.getItem(name) === value) return;
    } catch (e) {
      /* blocked or full: fall back to the cookie */
    }
    writeCookie(name, value, days);
  };

  // --- ids -----------------------------------------------------------------------------------
  function uuid4() {
    const cryptoObj = root.crypto;
    if (cryptoObj && typeof cryptoObj.randomUUID === "function") return cryptoObj.randomUUID();
    const bytes = new Uint8Array(16);
    if (cryptoObj && cryptoObj.getRandomValues) cryptoObj.getRandomValues(bytes);
    else for (let i = 0; i < 16; i++) bytes[i] = Math.floor(Math.random() * 256);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    const hex = Array.from(bytes, (b) => (b + 0x100).toString(16).slice(1)).join("");
    return hex.slice(0, 8) + "-" + hex.slice(8, 12) + "-" + hex.slice(12, 16) + "-" + hex.slice(16, 20) + "-" + hex.slice(20);
  }

  /** UUIDv7 (RFC 9562): 48-bit millisecond time, version 7, random bits: ids sort by time. */
  function uuid7() {
    const hex = uuid4().replace(/-/g, "");
    const ms = Date.now().toString(16).padStart(12, "0").slice(-12);
    const tail = hex.slice(13, 16) + ((parseInt(hex.charAt(16), 16) & 0x3) | 0x8).toString(16) + hex.slice(17);
    return ms.slice(0, 8) + "-" + ms.slice(8) + "-7" + tail.slice(0, 3) + "-" + tail.slice(3, 7) + "-" + tail.slice(7, 19);
  }

  // --- outbox: tracked events until ingest answered (localStorage, else sessionStorage) ----------
  function outboxStore() {
    for (const name of ["localStorage", "sessionStorage"]) {
      try {
        const store = root[name];
        store.setItem(config.storagePrefix + "probe", "1");
        store.removeItem(config.storagePrefix + "probe");
        return store;
      } catch (e) {
        /* blocked: try the next one, else memory only */
      }
    }
    return null;
  }

  function saveOutbox() {
    const store = outboxStore();
    if (!store) return;
    try {
      store.setItem(config.storagePrefix + "outbox", JSON.stringify(outbox));
    } catch (e) {
      log("outbox not saved", e);
    }
  }

  function loadOutbox() {
    const store = outboxStore();
    try {
      const saved = JSON.parse((store && store.getItem(config.storagePrefix + "outbox")) || "[]");
      return Array.isArray(saved) ? saved.filter((e) => e && typeof e.event_id === "string") : [];
    } catch (e) {
      return [];
    }
  }

  // Read-modify-write, so that tabs of the same shop share one outbox instead of overwriting it.
  function current() {
    return outboxStore() ? loadOutbox() : outbox;
  }

  function remember(event) {
    outbox = current().concat([event]);
    if (outbox.length > config.outboxLimit) outbox.splice(0, outbox.length - config.outboxLimit);
    saveOutbox();
  }

  /** Ingest answered for these events (stored, or refused for good): no re-send. */
  function settle(events) {
    const done = {};
    for (const e of events) done[e.event_id] = true;
    outbox = current().filter((e) => !done[e.event_id]);
    saveOutbox();
  }

  function clientId() {
    let id = storage.get("cid");
    if (!id) {
      id = uuid4();
      storage.set("cid", id, 730);
      storage.set("first_sid", "", 730); // the next session started is this client's first
    }
    return id;
  }

  /** The current session (new after the inactivity timeout); `touch` records activity now. */
  function session(touch) {
    const now = Date.now();
    const timeout = config.sessionTimeoutMinutes * 60000;
    let current = null;
    try {
      current = JSON.parse(storage.get("session") || "null");
    } catch (e) {
      current = null;
    }
    if (!current || !current.id || typeof current.last !== "number" || now - current.last > timeout) {
      current = { id: uuid4(), last: now };
      if (touch && storage.get("first_sid") === "") storage.set("first_sid", current.id, 730);
    }
    if (touch) {
      current.last = now;
      storage.set("session", JSON.stringify(current), 730);
    }
    return current.id;
  }

  // --- identity from the Cognito id token ----------------------------------------------------
  function decodeJwtPayload(token) {
    if (typeof token !== "string") return null;
    const parts = token.split(".");
    if (parts.length < 2) return null;
    try {
      let b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
      while (b64.length % 4) b64 += "=";
      const binary = root.atob(b64);
      const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
      const text = typeof TextDecoder === "function" ? new TextDecoder().decode(bytes) : binary;
      const payload = JSON.parse(text);
      return payload && typeof payload === "object" ? payload : null;
    } catch (e) {
      return null;
    }
  }

  function cognitoKeys() {
    // Amplify keeps tokens under CognitoIdentityServiceProvider.<appClientId>.<user>.idToken, in
    // localStorage by default or in cookies (Next.js server-side rendering).
    const found = [];
    const wanted = config.cognitoClientId ? "CognitoIdentityServiceProvider." + config.cognitoClientId + "." : "CognitoIdentityServiceProvider.";
    const matches = (key) => key.indexOf(wanted) === 0 && key.slice(-8) === ".idToken";
    try {
      for (let i = 0; i < root.localStorage.length; i++) {
        const key = root.localStorage.key(i);
        if (matches(key)) found.push(root.localStorage.getItem(key));
      }
    } catch (e) {
      /* storage blocked */
    }
    for (const part of (document.cookie || "").split(";")) {
      const eq = part.indexOf("=");
      const key = decodeURIComponent(part.slice(0, eq).trim());
      if (eq > 0 && matches(key)) found.push(decodeURIComponent(part.slice(eq + 1).trim()));
    }
    return found;
  }

  /** user_id / user_login_state / identity_source from a valid (unexpired) Cognito id token. */
  function identity() {
    let tokens = [];
    if (typeof config.idToken === "function") {
      try {
        tokens = [config.idToken()];
      } catch (e) {
        tokens = [];
      }
    } else {
      tokens = cognitoKeys();
    }
    const nowSeconds = Date.now() / 1000;
    for (const token of tokens) {
      const claims = decodeJwtPayload(token);
      if (claims && typeof claims.sub === "string" && claims.sub && (!claims.exp || claims.exp > nowSeconds)) {
        return { user_id: claims.sub.slice(0, 128), user_login_state: "logged_in", identity_source: "cognito" };
      }
    }
    return { user_id: null, user_login_state: "guest", identity_source: "anonymous" };
  }

  // --- product context -----------------------------------------------------------------------
  function number(value) {
    if (value === undefined || value === null || value === "") return null;
    const n = typeof value === "number" ? value : parseFloat(String(value).replace(/[^0-9.\-]/g, ""));
    return Number.isFinite(n) && n >= 0 ? Math.round(n * 100) / 100 : null;
  }

  function productContext(product) {
    if (!product || product.id === undefined || product.id === null || product.id === "") return {};
    const context = {
      context_product_id: String(product.id),
      context_product_name: product.name == null ? null : String(product.name),
      context_product_category: product.category == null ? null : String(product.category),
      context_product_brand: product.brand == null ? null : String(product.brand),
      context_product_price: number(product.price),
      context_product_discount_price: number(product.discount_price !== undefined ? product.discount_price : product.discountPrice),
      context_product_url_path: product.url_path || product.urlPath || null,
    };
    return clean(context);
  }

  /** Product of the closest element carrying data-product-id (a card, a button inside it, a page). */
  function productOf(element) {
    const el = element && element.closest ? element.closest("[data-product-id]") : null;
    if (!el) return {};
    const d = el.dataset;
    return productContext({
      id: d.productId,
      name: d.productName,
      category: d.productCategory,
      brand: d.productBrand,
      price: d.productPrice,
      discount_price: d.productDiscountPrice,
      url_path: d.productUrlPath,
    });
  }

  function pageProduct() {
    return document.querySelector("[data-product-page][data-product-id]");
  }

  /**
   * At most `limit` code points (what the contract's maxLength counts), never half of a surrogate
   * pair; a lone surrogate in the input (which UTF-8 cannot encode) becomes U+FFFD.
   */
  function truncate(text, limit) {
    let out = "";
    let count = 0;
    for (let i = 0; i < text.length && count < limit; i++, count++) {
      const c = text.charCodeAt(i);
      const next = text.charCodeAt(i + 1);
      if (c >= 0xd800 && c <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) out += text.charAt(i) + text.charAt(++i);
      else out += c >= 0xd800 && c <= 0xdfff ? "\ufffd" : text.charAt(i);
    }
    return out;
  }

  /** Keep the event inside the contract: caps, url path shape, discount <= price. */
  function clean(context) {
    for (const key of Object.keys(TEXT_LIMITS)) {
      if (typeof context[key] === "string") context[key] = truncate(context[key], TEXT_LIMITS[key]);
    }
    if (context.context_product_id === "") delete context.context_product_id;
    const path = context.context_product_url_path;
    if (path != null && (typeof path !== "string" || path.charAt(0) !== "/")) context.context_product_url_path = null;
    for (const key of ["page_url", "page_path", "page_title", "page_referrer"]) {
      // control characters are outside the contract: replaced, never a reason to lose the event
      if (typeof context[key] === "string") context[key] = context[key].replace(/[\u0000-\u001f\u007f]/g, " ");
    }
    const price = context.context_product_price;
    const discount = context.context_product_discount_price;
    if (price != null && discount != null && discount > price) context.context_product_discount_price = null;
    return context;
  }

  // --- page, campaign and client context (contract v1.1) --------------------------------------
  function deniedParam(name, value) {
    const lower = name.toLowerCase();
    if (config.allowedQueryParams.some((allowed) => String(allowed).toLowerCase() === lower)) return false;
    if (CLICK_IDS.indexOf(lower) >= 0) return true;
    const words = name.replace(/([a-z0-9])([A-Z])/g, "$1 $2").toLowerCase().split(/[^a-z0-9]+/);
    const denied = config.deniedQueryParams.map((word) => String(word).toLowerCase());
    const hit = (word) => word && denied.some((d) => word === d || word.indexOf(d) === 0 || word.slice(-d.length) === d);
    if (words.some(hit)) return true;
    return EMAIL_VALUE.test(value) || JWT_VALUE.test(value);
  }

  /** A URL without the fragment and without the query parameters that look like secrets or personal data. */
  function cleanUrl(text) {
    if (!text) return null;
    let url;
    try {
      url = new URL(text, location.href);
    } catch (e) {
      return null;
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") return url.protocol === "android-app:" ? url.origin + "/" : null;
    const kept = [];
    for (const [name, value] of url.searchParams) {
      if (!deniedParam(name, value)) kept.push([name, value]);
    }
    url.search = kept.length ? "?" + new URLSearchParams(kept).toString() : "";
    url.hash = "";
    url.username = "";
    url.password = "";
    return url.href;
  }

  function clientContext() {
    const context = {};
    const scr = root.screen;
    if (scr && scr.width > 0 && scr.height > 0) context.screen = Math.round(scr.width) + "x" + Math.round(scr.height);
    if (root.innerWidth > 0 && root.innerHeight > 0) context.viewport = Math.round(root.innerWidth) + "x" + Math.round(root.innerHeight);
    const nav = root.navigator;
    if (nav && LOCALE.test(nav.language || "") && nav.language.length <= 35) context.locale = nav.language;
    try {
      const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
      if (TIME_ZONE.test(zone || "")) context.client_timezone = zone;
    } catch (e) {
      /* no Intl: no time zone */
    }
    return context;
  }

  /** page_* (the current page), utm_* and click_id_type (its URL), screen/viewport/locale/time zone. */
  function pageContext() {
    const params = new URLSearchParams(location.search);
    const context = {
      page_url: cleanUrl(location.href),
      page_path: location.pathname || "/",
      page_title: document.title || null,
      page_referrer: pageReferrer !== undefined ? pageReferrer : cleanUrl(document.referrer),
    };
    for (const name of UTM_FIELDS) {
      const value = (params.get(name) || "").trim();
      if (value) context[name] = value;
    }
    for (const name of params.keys()) {
      const lower = name.toLowerCase();
      if (CLICK_IDS.indexOf(lower) >= 0) {
        context.click_id_type = lower;
        break;
      }
    }
    return Object.assign(context, clientContext());
  }

  // --- events --------------------------------------------------------------------------------
  function timestamp(date) {
    const pad = (n, w) => String(Math.abs(n)).padStart(w || 2, "0");
    const offset = -date.getTimezoneOffset();
    return (
      date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate()) +
      "T" + pad(date.getHours()) + ":" + pad(date.getMinutes()) + ":" + pad(date.getSeconds()) +
      "." + pad(date.getMilliseconds(), 3) +
      (offset >= 0 ? "+" : "-") + pad(Math.floor(Math.abs(offset) / 60)) + ":" + pad(Math.abs(offset) % 60)
    );
  }

  function log() {
    if (config && config.debug && root.console) root.console.log.apply(root.console, ["[clickstream]"].concat(Array.from(arguments)));
  }

  /**
   * Queue one event. `props` may hold `product` ({id, name, category, brand, price, discount_price,
   * url_path}), `element` (product context from its closest [data-product-id]) and/or contract fields
   * (context_product_*). Returns the event, or null when the name is not a valid event name.
   */
  function track(name, props) {
    if (!config) throw new Error("clickstream.init({endpoint}) first");
    if (!enabled()) {
      log(config.requireConsent && !consented ? "no consent: not tracked" : "Do-Not-Track: not tracked", name);
      return null;
    }
    if (!EVENT_NAME.test(name)) {
      log("invalid event name dropped:", name);
      return null;
    }
    props = props || {};
    const sid = session(true);
    const firstSid = storage.get("first_sid");
    let context = {};
    if (props.element) context = productOf(props.element);
    if (props.product) context = productContext(props.product);
    for (const key of Object.keys(TEXT_LIMITS).concat(["context_product_price", "context_product_discount_price"])) {
      if (props[key] === undefined) continue;
      if (key.indexOf("price") > 0) context[key] = number(props[key]);
      else context[key] = props[key] === null ? null : String(props[key]);
    }
    const event = Object.assign(
      {
        event_id: uuid7(),
        event_timestamp: timestamp(new Date()),
        event_name: name,
      },
      identity(),
      {
        client_id: clientId(),
        session_id: sid,
        is_first_visit: firstSid === sid,
      },
      clean(Object.assign(pageContext(), context)),
    );
    queue.push(event);
    remember(event);
    log("queued", event);
    if (queue.length >= config.batchSize) flush();
    else if (!timer) timer = setTimeout(flush, config.flushInterval);
    return event;
  }

  function pageView() {
    if (!enabled()) return;
    lastPage = location.pathname + location.search;
    if (lastPageUrl !== null) pageReferrer = lastPageUrl; // an SPA route change: came from the last page
    lastPageUrl = cleanUrl(location.href);
    const productEl = pageProduct();
    const props = productEl ? { element: productEl } : {};
    track("page_view", props);
    if (productEl) track("product_view", props);
  }

  function doNotTrack() {
    const nav = root.navigator || {};
    const flag = nav.doNotTrack || root.doNotTrack || nav.msDoNotTrack;
    return flag === "1" || flag === "yes" || nav.globalPrivacyControl === true;
  }

  function enabled() {
    if (config.respectDoNotTrack && doNotTrack()) return false;
    return !config.requireConsent || consented;
  }

  // --- delivery ------------------------------------------------------------------------------
  /** The request body: the events (ids fixed when tracked) and this clock's send time. */
  function payload(events) {
    return JSON.stringify({ events: events, sent_at: timestamp(new Date()) });
  }

  // Re-sending is safe: each event keeps its event_id. What is still unanswered after the retries
  // stays in the outbox for the next page load; a 4xx (or a 200 with rejected indexes) is final.
  function post(events, attempt) {
    const body = payload(events);
    const abort = typeof AbortController === "function" ? new AbortController() : null;
    const timeout = abort ? setTimeout(() => abort.abort(), config.requestTimeout) : null;
    return root
      .fetch(config.endpoint, {
        method: "POST",
        mode: "cors",
        credentials: "omit",
        headers: { "Content-Type": "application/json" },
        body: body,
        keepalive: body.length < 60000,
        signal: abort ? abort.signal : undefined,
      })
      .then((response) => {
        clearTimeout(timeout);
        if (response.status >= 500 || response.status === 429) throw new Error("HTTP " + response.status);
        if (!response.ok) log("batch rejected", response.status);
        settle(events);
        return response;
      })
      .catch((error) => {
        clearTimeout(timeout);
        log("send failed", String(error));
        return attempt < config.maxRetries ? retry(events, attempt) : null;
      });
  }

  function retry(events, attempt) {
    return new Promise((resolve) => setTimeout(resolve, 500 * Math.pow(2, attempt))).then(() => post(events, attempt + 1));
  }

  /** Send everything queued; `unloading` uses sendBeacon (or fetch keepalive) that outlive the page. */
  function flush(unloading) {
    if (timer) {
      clearTimeout(timer);
      timer = null;
    }
    if (!config || !queue.length) return;
    const size = unloading ? UNLOAD_CHUNK : MAX_BATCH;
    while (queue.length) {
      const events = queue.splice(0, size);
      if (unloading && deliverOnUnload(events)) {
        settle(events); // handed to the browser, which delivers it after the page is gone
        continue;
      }
      if (typeof root.fetch === "function") post(events, 0);
      else log("no transport for", events.length, "events");
    }
  }

  // On page hide: fetch with keepalive outlives the page and, with credentials omitted, needs only the
  // API's plain CORS answer. sendBeacon always sends credentials, so a cross-origin JSON beacon also
  // needs Access-Control-Allow-Credentials: it is the fallback (or the choice for a same-origin API).
  function deliverOnUnload(events) {
    const body = payload(events);
    const nav = root.navigator;
    const beacon = () => {
      try {
        return nav.sendBeacon(config.endpoint, new Blob([body], { type: "application/json" }));
      } catch (e) {
        log("sendBeacon refused", e);
        return false;
      }
    };
    const canBeacon = nav && typeof nav.sendBeacon === "function";
    if (config.transport === "beacon" && canBeacon && beacon()) return true;
    if (config.transport !== "beacon" && typeof root.fetch === "function" && typeof Request === "function" && "keepalive" in Request.prototype) {
      root
        .fetch(config.endpoint, {
          method: "POST",
          mode: "cors",
          credentials: "omit",
          headers: { "Content-Type": "application/json" },
          body: body,
          keepalive: true,
        })
        .catch(() => null);
      return true;
    }
    return canBeacon && beacon();
  }

  function onHide() {
    if (document.visibilityState === "hidden") flush(true);
  }

  // A route change is a page view when the path or query changed (Next.js also calls replaceState
  // for the same URL, e.g. to save the scroll position: not a page view).
  function routeChanged() {
    setTimeout(() => {
      if (location.pathname + location.search !== lastPage) pageView();
    }, 0);
  }

  function patchHistory() {
    for (const method of ["pushState", "replaceState"]) {
      const original = root.history[method];
      root.history[method] = function () {
        const result = original.apply(this, arguments);
        routeChanged();
        return result;
      };
    }
    root.addEventListener("popstate", routeChanged);
  }

  function onClick(event) {
    const target = event.target && event.target.closest ? event.target.closest("[data-track]") : null;
    if (target) track(target.getAttribute("data-track"), { element: target });
  }

  /** Configure the tracker; safe to call once per page. */
  function init(options) {
    if (config) return api;
    config = Object.assign({}, DEFAULTS, options || {});
    if (!config.endpoint) throw new Error("clickstream: endpoint is required");
    if (!Array.isArray(config.deniedQueryParams)) throw new Error("clickstream: deniedQueryParams must be an array");
    if (!Array.isArray(config.allowedQueryParams)) throw new Error("clickstream: allowedQueryParams must be an array");
    if (enabled()) start();
    else log("waiting for consent(true) or without Do-Not-Track: nothing tracked");
    return api;
  }

  /** Ids, the outbox of earlier pages, listeners and the first page view: once, when tracking is allowed. */
  function start() {
    if (started) return;
    started = true;
    clientId();
    // Events a previous page tracked but never got an answer for: sent again with the same ids.
    outbox = loadOutbox();
    if (outbox.length) {
      queue = outbox.slice();
      timer = setTimeout(flush, 0);
    }
    root.addEventListener("pagehide", () => flush(true));
    document.addEventListener("visibilitychange", onHide);
    if (config.trackClicks) document.addEventListener("click", onClick, true);
    if (config.trackHistory && root.history && root.history.pushState) patchHistory();
    if (config.autoPageView) {
      if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", pageView);
      else pageView();
    }
  }

  /**
   * The visitor's choice (with requireConsent): true starts tracking (this page's page view first),
   * false stops it and forgets what was queued and not yet sent (the outbox included).
   */
  function consent(granted) {
    if (!config) throw new Error("clickstream.init({endpoint}) first");
    consented = granted === true;
    if (consented && enabled()) start();
    if (!consented && config.requireConsent) {
      if (timer) clearTimeout(timer);
      timer = null;
      queue = [];
      if (started) {
        outbox = [];
        saveOutbox();
      }
    }
    return consented;
  }

  const api = {
    version: VERSION,
    init: init,
    track: track,
    consent: consent,
    flush: () => flush(false),
    pageView: pageView,
    identity: () => (config ? identity() : null),
    clientId: () => (config && started ? clientId() : null),
    sessionId: () => (config && started ? session(false) : null),
    pending: () => queue.length,
    unanswered: () => (config && started ? current().length : 0),
    enabled: () => (config ? enabled() : false),
  };
  root.clickstream = api;

  // <script src="clickstream.js" data-endpoint="..."> initialises itself.
  const script = document.currentScript;
  if (script && script.dataset && script.dataset.endpoint) {
    init({
      endpoint: script.dataset.endpoint,
      cognitoClientId: script.dataset.cognitoClientId || null,
      debug: script.dataset.debug === "true",
      requireConsent: script.dataset.requireConsent === "true",
      respectDoNotTrack: script.dataset.respectDoNotTrack === "true",
    });
  }
})(typeof window !== "undefined" ? window : this);
