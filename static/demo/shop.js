/* The demo shop's own script (static/demo/shop.html): renders the products and applies the variants
   Kairos decides. A separate file, not an inline script, so the page runs under a strict CSP. */
(function () {
  "use strict";
  var PRODUCTS = [
    ["ridgeline-trail-3", "trail-shoes", "Ridgeline Trail 3", 139], ["tempo-carbon", "road-shoes", "Tempo Carbon", 189],
    ["race-vest-5l", "hydration", "Race Vest 5 L", 99], ["pace-pro-gps", "gps-watches", "Pace Pro GPS", 299],
    ["outlet-tee", "sale", "Outlet Tee", 15], ["runners-gift-box", "gifts", "Runner's Gift Box", 45],
    ["cork-yoga-mat", "yoga", "Cork Yoga Mat", 69], ["jogging-stroller", "kids-baby", "Jogging Stroller", 449],
    ["summit-trail-gtx", "trail-shoes", "Summit Trail GTX", 159], ["canyon-trail-lite", "trail-shoes", "Canyon Trail Lite", 119]
  ];
  // The serving page may preset {key, endpoint} in <script type="application/json" id="kairos-demo">.
  var presetBlock = document.getElementById("kairos-demo");
  var params = new URLSearchParams(location.search), preset = presetBlock ? JSON.parse(presetBlock.textContent) : {};
  var key = params.get("key") || preset.key, endpoint = params.get("endpoint") || preset.endpoint || location.origin;
  var debug = document.getElementById("debug");
  // The cart outlives the page, as a real shop's does: a visitor who leaves and comes back still has it.
  var cart = [];
  try { cart = JSON.parse(localStorage.getItem("demo_cart") || "[]"); } catch (e) { cart = []; }
  function cartSave() {
    try { localStorage.setItem("demo_cart", JSON.stringify(cart)); } catch (e) { /* private mode: this page only */ }
    document.getElementById("cart-count").textContent = cart.length;
  }
  cartSave();

  document.querySelector("form.search").addEventListener("submit", function (e) { e.preventDefault(); });

  function text(id, value) { document.getElementById(id).textContent = value; }

  PRODUCTS.forEach(function (p) {
    var card = document.createElement("div");
    card.className = "card";
    card.innerHTML = "<strong><a class='product-link' data-kairos-target='product'></a></strong><div class='price'></div><p><button class='btn' data-kairos-target='add-to-cart'>Add to cart</button></p>";
    var link = card.querySelector("a");
    link.textContent = p[2];
    link.href = "#p/" + p[0];
    // A product "page" the way a single-page shop shows one: a virtual page view with its item and category.
    link.addEventListener("click", function (e) {
      e.preventDefault();
      history.pushState(null, "", "#p/" + p[0]);
      Kairos.page({ item: p[0], category: p[1] });
    });
    card.querySelector(".price").textContent = "$" + p[3];
    var button = card.querySelector("button");
    button.setAttribute("data-kairos-item", p[0]);
    button.setAttribute("data-kairos-category", p[1]);
    button.addEventListener("click", function () {
      cart.push(p);
      cartSave();
      Kairos.track("add_to_cart", { item: p[0], category: p[1], price: p[3] });
    });
    document.getElementById("products").appendChild(card);
  });
  document.getElementById("checkout").addEventListener("click", function () {
    if (!cart.length) return;
    var value = cart.reduce(function (sum, p) { return sum + p[3]; }, 0);
    Kairos.track("purchase", { items: cart.map(function (p) { return p[0]; }), category: cart[0][1], value: value }, value);
    Kairos.flush();
    cart = [];
    cartSave();
    debug.textContent += "\npurchase sent: $" + value;
  });

  if (!key) {
    debug.textContent = "No public key: open this page with ?key=kp_… (see var/demo-keys.json). Showing the defaults.";
    return;
  }
  // ?as=d42 browses as seeded demo profile d42: the snippet keeps its anonymous id in localStorage.
  if (params.get("as")) {
    try { localStorage.setItem("kairos_aid", params.get("as")); } catch (e) { /* private mode: a new visitor */ }
  }
  Kairos.init({ key: key, endpoint: endpoint });
  Kairos.decide().then(function (assignments) {
    var hero = assignments["homepage-hero"], banner = assignments["shipping-banner"];
    var recs = assignments["product-recs"], popup = assignments["signup-popup"];
    if (hero && hero.payload) {
      document.getElementById("hero-image").src = hero.payload.image;
      text("hero-headline", hero.payload.headline);
      text("hero-cta", hero.payload.cta);
      document.getElementById("hero-cta").setAttribute("href", hero.payload.cta_url || "#");
    }
    if (banner && banner.payload) text("banner", banner.payload.text || "");
    if (recs && recs.payload) text("recs-title", recs.payload.title);
    if (popup && popup.payload && popup.payload.show) {
      text("popup-headline", popup.payload.headline);
      text("popup-cta", popup.payload.cta);
      setTimeout(function () { document.getElementById("popup").style.display = "flex"; }, 4000);
    }
    var lines = ["visitor " + Kairos.anonymousId()];
    Object.keys(assignments).sort().forEach(function (k) {
      var a = assignments[k];
      lines.push(k + " → " + a.variant + "  (" + a.reason + ")");
    });
    debug.textContent = lines.length > 1 ? lines.join("\n") : "Kairos did not answer: showing the defaults.";
  });
  ["popup-cta", "popup-close"].forEach(function (id) {
    document.getElementById(id).addEventListener("click", function () { document.getElementById("popup").style.display = "none"; });
  });
})();
