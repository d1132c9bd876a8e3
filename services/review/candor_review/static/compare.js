// Candor review desk: live comparison tools. The page works without this script (every tool is
// also a link the server draws); with it, the mouse wheel zooms, dragging pans, a double click
// goes back, both photos of a pair move together, and the overlay's opacity follows a slider.
// Served by the desk itself under its Content-Security-Policy (script-src 'self'; nothing inline).
"use strict";

(function () {
  function home(svg) {
    return svg.getAttribute("data-home").split(" ").map(Number);
  }

  // One view state for every photo of a group: a zoom factor and a pan, as shares of each
  // photo's own starting view, so the same region of both faces stays in view.
  function syncGroup(svgs) {
    var state = { scale: 1, fx: 0, fy: 0 };
    function draw() {
      svgs.forEach(function (svg) {
        var h = home(svg);
        var w = h[2] / state.scale, hh = h[3] / state.scale;
        var cx = h[0] + h[2] / 2 + state.fx * h[2], cy = h[1] + h[3] / 2 + state.fy * h[3];
        svg.setAttribute("viewBox", [cx - w / 2, cy - hh / 2, w, hh].map(function (v) { return v.toFixed(1); }).join(" "));
      });
    }
    svgs.forEach(function (svg) {
      svg.addEventListener("wheel", function (event) {
        event.preventDefault();
        state.scale = Math.min(16, Math.max(0.5, state.scale * (event.deltaY < 0 ? 1.25 : 0.8)));
        draw();
      }, { passive: false });
      var dragging = null;
      svg.addEventListener("pointerdown", function (event) {
        dragging = { x: event.clientX, y: event.clientY, fx: state.fx, fy: state.fy };
        svg.setPointerCapture(event.pointerId);
      });
      svg.addEventListener("pointermove", function (event) {
        if (!dragging) return;
        var box = svg.getBoundingClientRect();
        state.fx = dragging.fx - (event.clientX - dragging.x) / box.width / state.scale;
        state.fy = dragging.fy - (event.clientY - dragging.y) / box.height / state.scale;
        draw();
      });
      svg.addEventListener("pointerup", function () { dragging = null; });
      svg.addEventListener("dblclick", function () { state = { scale: 1, fx: 0, fy: 0 }; draw(); });
      svg.classList.add("live");
    });
  }

  document.querySelectorAll("[data-synced]").forEach(function (pair) {
    syncGroup(Array.prototype.slice.call(pair.querySelectorAll("svg.photo")));
  });
  document.querySelectorAll("svg.overlay").forEach(function (svg) { syncGroup([svg]); });

  document.querySelectorAll("input[data-opacity-for]").forEach(function (slider) {
    var top = document.querySelector("#" + slider.getAttribute("data-opacity-for") + " g.top");
    if (!top) return;
    slider.closest("label").hidden = false;
    slider.addEventListener("input", function () { top.setAttribute("opacity", String(slider.value / 100)); });
  });
})();
