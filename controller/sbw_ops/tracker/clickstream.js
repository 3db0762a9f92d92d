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
 *
 *   <script src="/clickstream.js" data-endpoint="https://abc.execute-api.ap-southeast-1.amazonaws.com/clickstream"></script>
 *   clickstream.track("add_to_cart", { element: button })      // product context from the closest [data-product-id]
 *   clickstream.track("purchase", { product: { id: "1001", name: "...", price: 12.5 } })
 */
(function (root) {
  "use strict";

  const VERSION = "1.0.0";
  const DEFAULTS = {
    endpoint: null, // ingest URL (required)
    batchSize: 10, // flush when this many events are queued
    flushInterval: 5000, // ... or this many ms after the first queued event
    sessionTimeoutMinutes: 30, // inactivity that ends a session
    autoPageView: true, // page_view (and product_view on a product page) at init
    trackHistory: true, // page_view on pushState / popstate (Next.js client navigation)
    trackClicks: true, // clicks on [data-track="event_name"] elements
    storagePrefix: "sbw_cs_",
    cookieDomain: null, // e.g. ".shop.example" to share the ids across subdomains
    cognitoClientId: null, // Cognito app client id, to pick the right token when several exist
    idToken: null, // function returning the current Cognito id token (overrides the lookup)
    transport: "auto", // page hide: "auto" (fetch keepalive, else sendBeacon), "beacon" (same-origin API) or "fetch"
    maxRetries: 2, // re-sends of a batch after a network error, a timeout or 5xx/429
    requestTimeout: 10000, // ms before a request without answer is aborted and retried
    outboxLimit: 1000, // events kept for re-sending at most (the oldest go first)
    debug: false,
  };
  const EVENT_NAME = /^[a-z][a-z0-9_]{0,49}$/;
  const TEXT_LIMITS = {
    context_product_id: 64,
    context_product_name: 256,
    context_product_category: 128,
    context_product_brand: 128,
    context_product_url_path: 2048,
  };
  const UNLOAD_CHUNK = 50; // keepalive bodies must stay under 64 KiB in total
  const MAX_BATCH = 500; // the ingest limit per request

  let config = null;
  let queue = []; // events of this page not sent yet
  let outbox = []; // every event not yet answered by ingest (persisted, re-sent on the next page load)
  let timer = null;
  let lastPage = null;
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
    const price = context.context_product_price;
    const discount = context.context_product_discount_price;
    if (price != null && discount != null && discount > price) context.context_product_discount_price = null;
    return context;
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
      clean(context),
    );
    queue.push(event);
    remember(event);
    log("queued", event);
    if (queue.length >= config.batchSize) flush();
    else if (!timer) timer = setTimeout(flush, config.flushInterval);
    return event;
  }

  function pageView() {
    const page = location.pathname + location.search;
    lastPage = page;
    const productEl = pageProduct();
    const props = productEl ? { element: productEl } : {};
    track("page_view", props);
    if (productEl) track("product_view", props);
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

  function patchHistory() {
    const original = root.history.pushState;
    root.history.pushState = function () {
      const result = original.apply(this, arguments);
      setTimeout(() => {
        if (location.pathname + location.search !== lastPage) pageView();
      }, 0);
      return result;
    };
    root.addEventListener("popstate", () => setTimeout(pageView, 0));
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
    return api;
  }

  const api = {
    version: VERSION,
    init: init,
    track: track,
    flush: () => flush(false),
    pageView: pageView,
    identity: () => (config ? identity() : null),
    clientId: () => (config ? clientId() : null),
    sessionId: () => (config ? session(false) : null),
    pending: () => queue.length,
    unanswered: () => (config ? current().length : 0),
  };
  root.clickstream = api;

  // <script src="clickstream.js" data-endpoint="..."> initialises itself.
  const script = document.currentScript;
  if (script && script.dataset && script.dataset.endpoint) {
    init({
      endpoint: script.dataset.endpoint,
      cognitoClientId: script.dataset.cognitoClientId || null,
      debug: script.dataset.debug === "true",
    });
  }
})(typeof window !== "undefined" ? window : this);
