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
  // The page to open after the login, and its script fetched while the password is checked
  // (the login action takes most of the wait): that page then runs its first request at once.
  const next = new URLSearchParams(location.search).get("next") || "home";
  const [nextPage, nextQuery] = next.split("?");
  const safe = /^[a-z]+$/.test(nextPage) ? nextPage : "home"; // never an open redirect
  const own = document.querySelector('script[src*="login.js"]');
  const prefetchNext = () => {
    if (!own) return;
    const link = document.createElement("link");
    Object.assign(link, { rel: "prefetch", as: "script", href: own.src.replace("login.js", `${safe}.js`) });
    document.head.append(link);
  };
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    prefetchNext();
    const button = form.querySelector("button");
    button.disabled = true;
    showError($("#login-error"), null);
    try {
      const res = await api("login", { body: { username: $("#username").value.trim(), password: $("#password").value },
                                       noRedirect: true });
      remember(res.token, res.user);
      location.replace(pageUrl(safe) + (nextQuery ? "?" + nextQuery : ""));
    } catch (err) {
      $("#password").value = "";
      showError($("#login-error"), err.status === 401 ? new Error("Wrong user name or password.") : err);
      $("#password").focus();
    } finally {
      button.disabled = false;
    }
  });
})();
