/* Dashboard behaviour. Pages carry no inline scripts or handlers, so the Content-Security-Policy can
   allow scripts from this site only (config/security.py); everything a page does in the browser is here. */
(function () {
  "use strict";
  var PLOT_CONFIG = { displayModeBar: false, responsive: true };

  // Charts: <script type="application/json" class="kairos-charts">{"<element id>": plotly figure}</script>.
  // Drawn on load and after every htmx swap; chart divs kept with hx-preserve update in place (zoom kept).
  function drawCharts() {
    if (!window.Plotly) return;
    document.querySelectorAll("script.kairos-charts").forEach(function (block) {
      var figures = JSON.parse(block.textContent);
      Object.keys(figures).forEach(function (id) {
        var el = document.getElementById(id);
        if (el) Plotly.react(el, figures[id].data, figures[id].layout, PLOT_CONFIG);
      });
    });
  }

  // <form data-confirm="…">: asks before submitting. A form htmx posts asks through hx-confirm instead.
  function confirmSubmit(event) {
    var form = event.target;
    if (!form || !form.getAttribute) return;
    var message = form.getAttribute("data-confirm") ||
      (!form.hasAttribute("hx-post") && form.getAttribute("hx-confirm"));
    if (message && !window.confirm(message)) event.preventDefault();
  }

  // <select data-autosubmit>: submits its form on change (the project switcher).
  function autoSubmit(event) {
    var el = event.target;
    if (el && el.matches && el.matches("[data-autosubmit]") && el.form) el.form.submit();
  }

  // The experience form: add and remove variant and condition rows; show the fields of the chosen policy.
  function experienceForm(form) {
    function renumber() {
      // The control radio's value is the row's position, as the server reads the rows in order.
      form.querySelectorAll("#variant-rows .variant-row").forEach(function (row, i) {
        row.querySelector("input[type=radio]").value = String(i);
      });
    }
    function syncPolicy() {
      var policy = document.getElementById("id_policy").value;
      form.querySelectorAll("[data-policies]").forEach(function (el) {
        el.hidden = el.dataset.policies.split(" ").indexOf(policy) < 0;
      });
    }
    form.addEventListener("click", function (event) {
      var add = event.target.closest("[data-add]");
      if (add) {
        var list = document.getElementById(add.dataset.add + "-rows");
        list.appendChild(document.getElementById(add.dataset.add + "-template").content.cloneNode(true));
        renumber();
        list.lastElementChild.querySelector("input").focus();
        return;
      }
      var remove = event.target.closest("[data-remove]");
      if (remove) {
        remove.closest(".variant-row, .condition-row").remove();
        renumber();
      }
    });
    document.getElementById("id_policy").addEventListener("change", syncPolicy);
    syncPolicy();
  }

  document.addEventListener("submit", confirmSubmit, true);
  document.addEventListener("change", autoSubmit);
  document.addEventListener("htmx:afterSettle", drawCharts);
  document.addEventListener("DOMContentLoaded", function () {
    drawCharts();
    var form = document.getElementById("experience-form");
    if (form) experienceForm(form);
  });
})();
