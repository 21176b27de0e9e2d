// credfed console: the little the pages need that HTML cannot do. No
// inline scripts (the Content-Security-Policy allows none).
"use strict";
(function () {
  function csrf(form) {
    var f = form || document.querySelector('input[name="csrf"]');
    var el = f && f.querySelector ? f.querySelector('input[name="csrf"]') : f;
    return el ? el.value : "";
  }

  // The identifier is checked as it is typed, by the node, with the
  // messages of its own validation (check character included).
  var subject = document.querySelector("input[data-validate]");
  if (subject) {
    var hint = document.getElementById(subject.getAttribute("aria-describedby"));
    var timer = null, seq = 0;
    subject.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(function () {
        var v = subject.value.trim(), mine = ++seq;
        if (v.length === 0) { hint.className = "hint"; return; }
        var body = new URLSearchParams();
        body.set("subject", v);
        body.set("csrf", csrf(subject.form));
        fetch(subject.getAttribute("data-validate"), { method: "POST", body: body, credentials: "same-origin" })
          .then(function (r) { return r.json(); })
          .then(function (a) {
            if (mine !== seq) return;
            hint.textContent = a.ok ? "✓ " + a.kind : a.message;
            hint.className = a.ok ? "hint good" : "hint bad";
            subject.setAttribute("aria-invalid", a.ok ? "false" : "true");
          })
          .catch(function () {});
      }, 250);
    });
  }

  // After a check, the answer is below the form: take the focus there.
  var answer = document.getElementById("answer-title");
  if (answer) answer.focus();

  var print = document.getElementById("print");
  if (print) print.addEventListener("click", function () { window.print(); });

  // A batch job's page follows its progress.
  var job = document.getElementById("job");
  if (job) {
    var url = job.getAttribute("data-status-url");
    var poll = function () {
      fetch(url, { credentials: "same-origin" }).then(function (r) { return r.json(); }).then(function (s) {
        var p = document.getElementById("job-progress");
        p.max = s.rows; p.value = s.done; p.textContent = s.percent + "%";
        document.getElementById("job-done").textContent = s.done;
        document.getElementById("job-failed").textContent = s.failed;
        document.getElementById("job-label").textContent = s.label;
        job.setAttribute("data-status", s.status);
        if (s.status === "done") document.getElementById("job-results").hidden = false;
        if (s.status === "queued" || s.status === "running") setTimeout(poll, 500);
      }).catch(function () { setTimeout(poll, 2000); });
    };
    var st = job.getAttribute("data-status");
    if (st === "queued" || st === "running") setTimeout(poll, 300);
  }

  // A records file goes up with a progress bar; the counts and the
  // rejection report's link come back as JSON.
  var up = document.getElementById("upload-form");
  if (up && window.FormData && window.XMLHttpRequest) {
    up.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var bar = document.getElementById(up.getAttribute("data-progress"));
      var out = document.getElementById(up.getAttribute("data-result"));
      var xhr = new XMLHttpRequest();
      xhr.open("POST", up.action);
      xhr.setRequestHeader("Accept", "application/json");
      bar.hidden = false; bar.value = 0;
      xhr.upload.addEventListener("progress", function (e) {
        if (e.lengthComputable) { bar.value = Math.round(e.loaded * 100 / e.total); bar.textContent = bar.value + "%"; }
      });
      xhr.addEventListener("load", function () {
        bar.value = 100;
        var en = document.documentElement.lang === "en";
        var a = null;
        try { a = JSON.parse(xhr.responseText); } catch (e) { a = null; }
        if (!a || typeof a !== "object" || (!a.error && (xhr.status < 200 || xhr.status > 299))) {
          // Not the console's answer: the session ended (a login page), or
          // a proxy's error page.
          a = { error: (en ? "The upload failed (HTTP " + xhr.status + "). Log in again and retry."
                           : "上传失败（HTTP " + xhr.status + "），请重新登录后再试。") };
        }
        out.textContent = "";
        var p = document.createElement("p");
        if (a.error) { p.className = "error"; p.textContent = a.error; p.id = "upload-error"; }
        else { p.id = "upload-summary"; p.textContent = a.summary; }
        out.appendChild(p);
        if (a.report) {
          var l = document.createElement("a");
          l.id = "upload-report"; l.href = a.report; l.setAttribute("download", "");
          l.textContent = en ? "Download the rejection report (CSV)" : "下载退回报告（CSV）";
          var lp = document.createElement("p"); lp.appendChild(l); out.appendChild(lp);
        }
      });
      xhr.addEventListener("error", function () { out.textContent = xhr.statusText || "upload failed"; });
      xhr.send(new FormData(up));
    });
  }
})();
