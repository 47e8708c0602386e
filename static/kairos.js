/* Kairos site snippet: decide + behavior events. No dependencies; never throws into the page.
   Kairos.init({key: "kp_…", endpoint: "https://kairos.example.com"}); see docs/snippet.md. */
(function (window, document) {
  "use strict";
  if (window.Kairos && window.Kairos.version) return; // included twice: keep the first

  var SESSION_MS = 30 * 60 * 1000, MAX_QUEUE = 1000, CHUNK = 50, PREFIX = "kairos_";
  var cfg = null, queue = [], timer = null, backoff = 0, assignments = {}, warned = {};
  var pageViewId = null, pageUrl = null, visibleSince = null, dwellMs = 0, maxDepth = 0, sentDepth = 0;
  var scriptSrc = document.currentScript && document.currentScript.src;

  function safe(fn, fallback) {
    return function () {
      try { return fn.apply(null, arguments); } catch (e) { log("error", e); return fallback; }
    };
  }
  function log(what, detail) { if (cfg && cfg.debug && window.console) console.warn("[kairos] " + what, detail); }
  function warnOnce(status, body) {
    if (warned[status] || !window.console) return;
    warned[status] = 1;
    console.warn("[kairos] events rejected (" + status + "): " + body);
  }

  function uid() {
    var c = window.crypto, b = new Uint8Array(16), i, s = "";
    if (c && c.randomUUID) return c.randomUUID();
    if (c && c.getRandomValues) c.getRandomValues(b);
    else for (i = 0; i < 16; i++) b[i] = Math.random() * 256;
    for (i = 0; i < 16; i++) s += (b[i] + 256).toString(16).slice(1);
    return s;
  }

  // localStorage, or a first-party cookie when storage is blocked (Safari private mode, sandboxed frames)
  function load(name) {
    try { var v = window.localStorage.getItem(PREFIX + name); if (v !== null) return v; } catch (e) { /* cookie */ }
    var m = document.cookie.match(new RegExp("(?:^|; )" + PREFIX + name + "=([^;]*)"));
    return m ? decodeURIComponent(m[1]) : null;
  }
  function save(name, value) {
    try {
      if (value === null) window.localStorage.removeItem(PREFIX + name);
      else { window.localStorage.setItem(PREFIX + name, value); return; }
    } catch (e) { /* cookie */ }
    document.cookie = PREFIX + name + "=" + (value === null ? "; max-age=0" : encodeURIComponent(value) +
      "; max-age=31536000") + "; path=/; SameSite=Lax";
  }
  function loadJSON(name) { try { return JSON.parse(load(name) || "null"); } catch (e) { return null; } }

  function anonymousId() {
    var id = load("aid");
    if (!id) save("aid", (id = uid()));
    return id;
  }
  function sessionId() { // a new session after 30 minutes without events
    var now = Date.now(), s = loadJSON("sid");
    if (!s || now - s.t > SESSION_MS) s = { id: uid(), t: now };
    s.t = now;
    save("sid", JSON.stringify(s));
    return s.id;
  }
  function consent() { return loadJSON("consent") || {}; }
  // mobile, tablet or desktop: the user agent first (iPadOS presents itself as a Mac with touch; an
  // Android tablet's agent lacks "Mobile"), then a touch screen's size, so a narrow desktop window
  // stays a desktop.
  function device() {
    var ua = navigator.userAgent || "", touch = navigator.maxTouchPoints > 0;
    if (/iPad|Tablet|PlayBook|Silk|Kindle/i.test(ua) || (/Android/i.test(ua) && !/Mobile/i.test(ua)) ||
        (touch && /Macintosh/.test(ua))) return "tablet";
    if (/Mobi|iPhone|iPod|Windows Phone|IEMobile|BlackBerry|Opera Mini/i.test(ua)) return "mobile";
    var coarse = window.matchMedia && matchMedia("(pointer: coarse)").matches;
    if (coarse && touch) return Math.min(screen.width, screen.height) >= 600 ? "tablet" : "mobile";
    return "desktop";
  }
  function viewport() { // the layout the visitor sees, whatever the device says it is
    var w = window.innerWidth || document.documentElement.clientWidth;
    return w < 768 ? "mobile" : w < 1024 ? "tablet" : "desktop";
  }
  function utm() { // the landing page's utm_* (without the prefix), kept for the tab's session
    var tags = {}, found = false;
    new URLSearchParams(location.search).forEach(function (v, k) {
      if (/^utm_[a-z_]+$/.test(k) && v) { tags[k.slice(4)] = v.slice(0, 100); found = true; }
    });
    try {
      if (found) sessionStorage.setItem(PREFIX + "utm", JSON.stringify(tags)); // a new campaign landing replaces them
      else tags = JSON.parse(sessionStorage.getItem(PREFIX + "utm") || "{}") || {};
    } catch (e) { /* storage blocked: this page's tags only */ }
    return tags;
  }
  function utmProperties() { // page views carry them, so the live state knows the session's channel
    var tags = utm(), props = {};
    for (var k in tags) if (Object.prototype.hasOwnProperty.call(tags, k)) props["utm_" + k] = tags[k];
    return props;
  }
  function path() { return location.pathname + location.search; }

  function url(p) { return cfg.endpoint + "/api/v1/" + p; }
  function post(p, body, ms) {
    var ctl = window.AbortController ? new AbortController() : null, t = ctl && ms && setTimeout(function () { ctl.abort(); }, ms);
    var json = JSON.stringify(body);
    return fetch(url(p), { // keepalive lets a request outlive the page, but only up to 64 KB in flight
      method: "POST", keepalive: json.length < 60000, signal: ctl && ctl.signal, credentials: "omit",
      headers: { "Authorization": "Bearer " + cfg.key, "Content-Type": "application/json" }, body: json
    }).finally(function () { clearTimeout(t); });
  }

  function enqueue(type, properties, value) {
    if (!cfg || consent().analytics === false) return;
    var e = { event_id: uid(), type: type, anonymous_id: anonymousId(), session_id: sessionId(),
              timestamp: new Date().toISOString(), properties: properties || {} };
    if (cfg.userId) e.user_id = cfg.userId;
    if (value !== undefined && value !== null) e.value = value;
    queue.push(e);
    if (queue.length > MAX_QUEUE) queue.splice(0, queue.length - MAX_QUEUE);
    if (queue.length >= cfg.batchSize) flush();
    else if (!timer) timer = setTimeout(flush, cfg.flushInterval + backoff);
    return e.event_id;
  }

  function flush() {
    clearTimeout(timer);
    timer = null;
    if (!cfg || !queue.length) return;
    var batch = queue.splice(0, CHUNK);
    post("events", { events: batch }).then(function (r) {
      if (r.status >= 500 || r.status === 429) throw new Error("HTTP " + r.status);
      backoff = 0;
      if (r.status >= 400 || cfg.debug) r.text().then(function (t) { if (r.status >= 400) warnOnce(r.status, t); else log("sent", t); });
      if (queue.length) flush();
    }).catch(function (e) { // offline or server busy: retry later; event ids make a resend harmless
      log("flush failed", e);
      queue = batch.concat(queue).slice(-MAX_QUEUE);
      backoff = Math.min((backoff || 2500) * 2, 60000);
      if (!timer) timer = setTimeout(flush, cfg.flushInterval + backoff);
    });
  }

  // The page may be gone before a fetch finishes: sendBeacon survives it. It cannot set headers, so
  // the key goes in the body (never the URL, which ends up in logs), and a text/plain body keeps it
  // a CORS-simple request.
  function beacon() {
    clearTimeout(timer);
    timer = null;
    while (queue.length) {
      var batch = queue.slice(0, CHUNK), sent = false;
      try {
        sent = navigator.sendBeacon(url("events"),
          new Blob([JSON.stringify({ key: cfg.key, events: batch })], { type: "text/plain" }));
      } catch (e) { /* not supported */ }
      if (!sent) break;
      queue.splice(0, batch.length);
    }
    save("queue", queue.length ? JSON.stringify(queue.slice(-200)) : null); // sent on the next page
  }

  function depthNow() {
    var d = document.documentElement, h = Math.max(d.scrollHeight, document.body ? document.body.scrollHeight : 0);
    return h <= window.innerHeight ? 100 : Math.min(100, Math.round((window.scrollY + window.innerHeight) / h * 100));
  }
  // Scroll depth and visible time of the current page view since its last report. Called when the
  // page is hidden and before a single-page app's next virtual page, so no page view loses them; the
  // url is the page view's own (a single-page app has already changed location.href).
  function reportPage() {
    if (!cfg || !cfg.autoTrack || !pageViewId) return;
    if (visibleSince !== null) { dwellMs += Date.now() - visibleSince; visibleSince = null; }
    if (maxDepth > sentDepth) {
      enqueue("scroll", { depth: maxDepth, url: pageUrl, page_view_id: pageViewId });
      sentDepth = maxDepth;
    }
    if (dwellMs > 0) { // visible time since the last report; sum them per page view
      enqueue("dwell", { dwell_ms: dwellMs, url: pageUrl, page_view_id: pageViewId });
      dwellMs = 0;
    }
  }
  function onHidden() {
    if (!cfg) return;
    reportPage();
    beacon();
  }

  function target(el) {
    var t = el.getAttribute("data-kairos-target");
    if (t) return t;
    if (el.id) return "#" + el.id;
    var cls = (typeof el.className === "string" ? el.className.trim().split(/\s+/).slice(0, 2) : []).filter(Boolean);
    return el.tagName.toLowerCase() + (cls.length ? "." + cls.join(".") : "");
  }
  function extras(el, props) { // data-kairos-item="x" → properties.item = "x"
    for (var i = 0; i < el.attributes.length; i++) {
      var a = el.attributes[i].name.match(/^data-kairos-(.+)$/);
      if (a && a[1] !== "target" && a[1] !== "search") props[a[1].replace(/-/g, "_")] = el.attributes[i].value;
    }
    return props;
  }
  function onClick(ev) {
    var el = ev.target && ev.target.closest &&
      ev.target.closest("[data-kairos-target],a,button,[role=button],input[type=submit],input[type=button]");
    if (!el) return;
    var props = extras(el, { target: target(el), url: path() });
    var text = el.tagName === "INPUT" ? (/^(submit|button)$/.test(el.type) ? el.value : "") : el.innerText; // never typed input
    text = (text || "").trim().replace(/\s+/g, " ");
    if (text) props.text = text.slice(0, 60);
    if (el.tagName === "A" && el.href) props.href = el.getAttribute("href");
    enqueue("click", props);
  }
  function onSubmit(ev) {
    var form = ev.target, name = form && form.getAttribute && form.getAttribute("data-kairos-search");
    if (name === null || name === undefined) return;
    var input = (name && form.elements[name]) || form.querySelector("input[type=search],input[name=q],input[type=text],input:not([type])");
    var query = input && (input.value || "").trim();
    if (query) enqueue("search", extras(form, { query: query.slice(0, 200), url: path() }));
  }

  function page(properties) {
    reportPage(); // the previous virtual page's scroll and dwell (single-page apps)
    // A virtual page was reached from the previous one, not from the document's referrer.
    var referrer = pageUrl && pageUrl !== path() ? location.origin + pageUrl : document.referrer;
    visibleSince = document.visibilityState === "hidden" ? null : Date.now();
    dwellMs = 0;
    maxDepth = sentDepth = 0;
    pageUrl = path();
    pageViewId = enqueue("page_view", extras(document.body || document.documentElement,
      Object.assign({ url: pageUrl, title: document.title, referrer: referrer }, utmProperties(), properties || {})));
    if (document.readyState === "complete") maxDepth = depthNow();
  }

  var Kairos = {
    version: "1",
    init: safe(function (o) {
      o = o || {};
      if (!o.key) throw new Error("Kairos.init needs {key: 'kp_…'}");
      var first = !cfg;
      cfg = {
        key: o.key, userId: o.userId || load("uid") || null, debug: !!o.debug,
        endpoint: (o.endpoint || (scriptSrc ? new URL(scriptSrc).origin : location.origin)).replace(/\/+$/, ""),
        autoTrack: o.autoTrack !== false, flushInterval: o.flushInterval || 5000, batchSize: o.batchSize || 20,
        timeout: o.timeout || 2000
      };
      if (o.userId) save("uid", o.userId);
      var pending = loadJSON("queue");
      if (pending && pending.length) { save("queue", null); queue = pending.concat(queue); flush(); }
      if (!first) return;
      document.addEventListener("visibilitychange", safe(function () {
        if (document.visibilityState === "hidden") onHidden();
        else if (visibleSince === null) visibleSince = Date.now();
      }));
      window.addEventListener("pagehide", safe(onHidden));
      window.addEventListener("pageshow", safe(function (e) { if (e.persisted && cfg.autoTrack) page(); })); // back/forward cache
      if (!cfg.autoTrack) return;
      document.addEventListener("click", safe(onClick), true);
      document.addEventListener("submit", safe(onSubmit), true);
      window.addEventListener("scroll", safe(function () { maxDepth = Math.max(maxDepth, depthNow()); }), { passive: true });
      window.addEventListener("load", safe(function () { maxDepth = Math.max(maxDepth, depthNow()); }));
      page();
    }),
    // → {experience key: {variant, payload, reason, version}}; {} when Kairos cannot be reached
    decide: function (o) {
      try {
        if (!cfg) return Promise.resolve({});
        o = o || {};
        var body = { anonymous_id: anonymousId(), context: {
          url: path(), referrer: document.referrer, consent: consent(),
          device: device(), viewport: viewport(), utm: utm(),
          attributes: o.attributes || {}
        } };
        if (cfg.userId) body.user_id = cfg.userId;
        if (o.experiences) body.experiences = o.experiences;
        return post("decide", body, o.timeout || cfg.timeout).then(function (r) {
          return r.ok ? r.json() : r.text().then(function (t) { throw new Error(r.status + " " + t); });
        }).then(function (answer) {
          Object.assign(assignments, answer.assignments || {});
          return answer.assignments || {};
        }).catch(function (e) { log("decide failed; showing defaults", e); return {}; });
      } catch (e) { log("error", e); return Promise.resolve({}); }
    },
    variant: safe(function (key) { return assignments[key] ? assignments[key].variant : null; }, null),
    payload: safe(function (key) { return assignments[key] ? assignments[key].payload : null; }, null),
    track: safe(function (type, properties, value) { return enqueue(type, properties, value); }),
    page: safe(page),
    identify: safe(function (userId, attributes) {
      if (!cfg || !userId) return;
      cfg.userId = String(userId);
      save("uid", cfg.userId);
      enqueue("identify", attributes ? { attributes: attributes } : {});
    }),
    consent: safe(function (purposes) {
      var c = Object.assign(consent(), purposes || {});
      save("consent", JSON.stringify(c));
      if (c.analytics === false) { queue = []; save("queue", null); }
      else if (cfg) enqueue("consent", purposes || {}); // recorded on the profile (Privacy → require consent)
      return c;
    }),
    reset: safe(function () { // on logout: a new anonymous id and session, no user id
      if (cfg) { flush(); cfg.userId = null; }
      ["aid", "sid", "uid"].forEach(function (n) { save(n, null); });
      assignments = {};
    }),
    flush: safe(function () { flush(); }),
    anonymousId: safe(anonymousId, null),
    sessionId: safe(sessionId, null)
  };
  window.Kairos = Kairos;
})(window, document);
