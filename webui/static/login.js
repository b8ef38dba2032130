/* Login: POST user name + password to the login action, keep the token. */
(function () {
  "use strict";
  const { $, api, remember, pageUrl, showError } = window.RC;
  const form = $("#login-form");
  $("#idle-minutes").textContent = String(Math.round(window.RC.IDLE_MS / 60000));
  if (new URLSearchParams(location.search).get("why") === "idle") {
    const note = $("#login-note");
    note.textContent = `You were logged out after ${Math.round(window.RC.IDLE_MS / 60000)} minutes without activity. Log in again to continue.`;
    note.hidden = false;
  }
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const button = form.querySelector("button");
    button.disabled = true;
    showError($("#login-error"), null);
    try {
      const res = await api("login", { body: { username: $("#username").value.trim(), password: $("#password").value },
                                       noRedirect: true });
      remember(res.token, res.user);
      const next = new URLSearchParams(location.search).get("next") || "home";
      const [page, query] = next.split("?");
      const safe = /^[a-z]+$/.test(page) ? page : "home"; // never an open redirect
      location.replace(pageUrl(safe) + (query ? "?" + query : ""));
    } catch (err) {
      $("#password").value = "";
      showError($("#login-error"), err.status === 401 ? new Error("Wrong user name or password.") : err);
      $("#password").focus();
    } finally {
      button.disabled = false;
    }
  });
})();
