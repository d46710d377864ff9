// socialnet web front: a dependency-free ES module talking to the API on the same origin.
// Every piece of user content goes into the page through textContent / DOM APIs, never innerHTML.

const API = "/api";
const TOKEN_KEY = "socialnet.token";
const ME_KEY = "socialnet.me";
const MAX_POST_CHARS = 500;
const PAGE_SIZE = 20;

const state = {
  token: localStorage.getItem(TOKEN_KEY),
  me: readJson(localStorage.getItem(ME_KEY)),
};

function readJson(text) {
  try {
    return text ? JSON.parse(text) : null;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------------
// API client

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const STATUS_MESSAGES = {
  400: "The request was not understood.",
  401: "Please log in again.",
  403: "You are not allowed to do that.",
  404: "Not found.",
  409: "That already exists.",
  413: "That is too large.",
  429: "Too many requests; wait a moment and try again.",
};

function fieldName(loc) {
  const parts = (Array.isArray(loc) ? loc : [loc]).filter(
    (part) => part !== "body" && part !== "query" && part !== "path",
  );
  return parts.join(".");
}

// FastAPI answers {detail: "text"} or {detail: [{loc, msg}, ...]} (422); anything else is summarised.
function describeError(status, data) {
  const detail = data && typeof data === "object" ? (data.detail ?? data.message ?? data.error) : null;
  if (typeof detail === "string" && detail.trim()) return detail;
  if (Array.isArray(detail) && detail.length) {
    return detail
      .map((item) => {
        if (typeof item === "string") return item;
        const field = fieldName(item.loc ?? []);
        const msg = item.msg ?? item.message ?? "is invalid";
        return field ? `${field}: ${msg}` : msg;
      })
      .join("; ");
  }
  if (detail && typeof detail === "object") {
    const msg = detail.msg ?? detail.message ?? detail.reason;
    if (typeof msg === "string") return msg;
  }
  if (STATUS_MESSAGES[status]) return STATUS_MESSAGES[status];
  if (status >= 500) return `The server had a problem (HTTP ${status}). Please try again.`;
  return `Request failed (HTTP ${status}).`;
}

async function api(method, path, body, { auth = true } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const sentToken = auth ? state.token : null;
  if (sentToken) headers.Authorization = `Bearer ${sentToken}`;
  let response;
  try {
    response = await fetch(API + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
    });
  } catch {
    throw new ApiError(0, "Cannot reach the server. Check your connection and try again.");
  }
  let data = null;
  if ((response.headers.get("content-type") ?? "").includes("json")) {
    try {
      data = await response.json();
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    if (response.status === 401 && sentToken) {
      // The token expired or was revoked (e.g. key rotation): forget it and ask to log in again.
      if (sentToken === state.token) {
        signOut();
        go("#/login");
      }
      throw new ApiError(401, "Your session has ended. Please log in again.");
    }
    throw new ApiError(response.status, describeError(response.status, data));
  }
  return data;
}

const enc = encodeURIComponent;

const apiCalls = {
  signUp: (username, password, displayName) =>
    api(
      "POST",
      "/users",
      displayName ? { username, password, display_name: displayName } : { username, password },
      { auth: false },
    ),
  logIn: (username, password) =>
    api("POST", "/auth/token", { username, password }, { auth: false }),
  me: () => api("GET", "/users/me"),
  updateMe: (changes) => api("PATCH", "/users/me", changes),
  profile: (username) => api("GET", `/users/${enc(username)}`),
  follow: (username, on) => api(on ? "POST" : "DELETE", `/users/${enc(username)}/follow`),
  createPost: (text) => api("POST", "/posts", { text }),
  deletePost: (id) => api("DELETE", `/posts/${enc(id)}`),
  like: (id, on) => api(on ? "POST" : "DELETE", `/posts/${enc(id)}/like`),
  comments: (id) => api("GET", `/posts/${enc(id)}/comments`),
  addComment: (id, text) => api("POST", `/posts/${enc(id)}/comments`, { text }),
  timeline: (cursor) => api("GET", `/timeline?${pageQuery(cursor)}`),
  userPosts: (username, cursor) => api("GET", `/users/${enc(username)}/posts?${pageQuery(cursor)}`),
};

function pageQuery(cursor) {
  const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (cursor) query.set("cursor", cursor);
  return query.toString();
}

// ---------------------------------------------------------------------------------------------
// Session

function setSession(token, me) {
  state.token = token;
  state.me = me;
  localStorage.setItem(TOKEN_KEY, token);
  localStorage.setItem(ME_KEY, JSON.stringify({ username: me.username, display_name: me.display_name }));
}

function signOut() {
  state.token = null;
  state.me = null;
  localStorage.removeItem(TOKEN_KEY);
  localStorage.removeItem(ME_KEY);
  renderNav();
}

async function logInAs(username, password) {
  const grant = await apiCalls.logIn(username, password);
  state.token = grant.access_token;
  const me = await apiCalls.me();
  setSession(grant.access_token, me);
}

// ---------------------------------------------------------------------------------------------
// DOM helpers

// h("button", {class: "x", testid: "y", onclick: fn}, "label", child, ...): text children become
// text nodes, so data can never turn into markup.
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "testid") el.dataset.testid = value;
    else if (key === "text") el.textContent = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const view = () => document.getElementById("view");
const userHref = (username) => `#/u/${enc(username)}`;

function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

let toastTimer = 0;
function toast(message, kind = "info") {
  const el = document.getElementById("toast");
  el.textContent = message;
  el.dataset.kind = kind;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    el.hidden = true;
  }, 5000);
}

function errorBox(testid = "form-error") {
  const box = h("p", { class: "error", role: "alert", testid, hidden: true });
  return {
    el: box,
    show(message) {
      box.textContent = message;
      box.hidden = false;
    },
    clear() {
      box.textContent = "";
      box.hidden = true;
    },
  };
}

// Runs an async action with the button disabled, reporting failures in `report` (or a toast).
async function busy(button, action, report) {
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    return await action();
  } catch (error) {
    if (report) report(error.message);
    else toast(error.message, "error");
    return undefined;
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

const charCount = (text) => Array.from(text).length;

const fullDate = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const shortDate = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric" });
const longDate = new Intl.DateTimeFormat(undefined, { year: "numeric", month: "long" });

function relativeTime(iso) {
  const when = new Date(iso);
  if (Number.isNaN(when.getTime())) return "";
  const seconds = Math.max(0, (Date.now() - when.getTime()) / 1000);
  if (seconds < 45) return "just now";
  if (seconds < 3600) return `${Math.round(seconds / 60)}m`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)}h`;
  if (seconds < 7 * 86400) return `${Math.round(seconds / 86400)}d`;
  return shortDate.format(when);
}

function timeEl(iso) {
  const when = new Date(iso);
  const valid = !Number.isNaN(when.getTime());
  return h("time", { datetime: iso, title: valid ? fullDate.format(when) : null }, relativeTime(iso));
}

// Icons are fixed SVG paths (never data), drawn with DOM APIs so the CSP needs no exceptions.
const ICONS = {
  heart:
    "M12 21s-7.5-4.6-9.6-9.2C.9 8.4 2.9 4.5 6.6 4.1c2.1-.2 3.9.9 5.4 2.8 1.5-1.9 3.3-3 5.4-2.8 3.7.4 5.7 4.3 4.2 7.7C19.5 16.4 12 21 12 21z",
  comment:
    "M4 5.5A2.5 2.5 0 0 1 6.5 3h11A2.5 2.5 0 0 1 20 5.5v8a2.5 2.5 0 0 1-2.5 2.5H10l-4.5 4v-4h0A2.5 2.5 0 0 1 4 13.5z",
  trash: "M4 7h16M9 7V4.5h6V7M6.5 7l1 13h9l1-13M10 11v5M14 11v5",
};

function icon(name) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("class", `icon icon-${name}`);
  svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS(ns, "path");
  path.setAttribute("d", ICONS[name]);
  svg.append(path);
  return svg;
}

function hue(name) {
  let hash = 0;
  for (const ch of name) hash = (hash * 31 + ch.codePointAt(0)) % 360;
  return hash;
}

function avatar(user, size = "") {
  const label = (user.display_name || user.username || "?").trim();
  const el = h(
    "a",
    { class: `avatar ${size}`.trim(), href: userHref(user.username), "aria-hidden": "true", tabindex: "-1" },
    Array.from(label)[0]?.toUpperCase() ?? "?",
  );
  el.style.setProperty("--hue", String(hue(user.username ?? "")));
  return el;
}

// ---------------------------------------------------------------------------------------------
// Navigation bar

function renderNav() {
  const nav = document.getElementById("nav");
  const here = location.hash || "#/";
  const link = (href, testid, label, className) =>
    h("a", { href, testid, class: className, "aria-current": here === href ? "page" : null }, label);
  if (state.token && state.me) {
    nav.replaceChildren(
      link("#/", "nav-timeline", "Timeline"),
      link(userHref(state.me.username), "nav-me", `@${state.me.username}`, "nav-me"),
      h(
        "button",
        {
          type: "button",
          class: "link",
          testid: "logout",
          onclick: () => {
            signOut();
            toast("Logged out.");
            go("#/login");
          },
        },
        "Log out",
      ),
    );
  } else {
    nav.replaceChildren(
      link("#/login", "nav-login", "Log in"),
      link("#/signup", "nav-signup", "Sign up", "button small"),
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Sign up / log in

function authView(mode) {
  const error = errorBox();
  const isSignup = mode === "signup";

  const tabs = h(
    "div",
    { class: "tabs", role: "tablist" },
    h(
      "a",
      { href: "#/login", role: "tab", "aria-selected": String(!isSignup), testid: "tab-login" },
      "Log in",
    ),
    h(
      "a",
      { href: "#/signup", role: "tab", "aria-selected": String(isSignup), testid: "tab-signup" },
      "Sign up",
    ),
  );

  const field = (label, input, hint) =>
    h("label", { class: "field" }, h("span", { class: "field-label" }, label), input, hint ?? null);

  const username = h("input", {
    name: "username",
    required: true,
    autocomplete: "username",
    autocapitalize: "off",
    spellcheck: "false",
    testid: `${mode}-username`,
  });
  const password = h("input", {
    name: "password",
    type: "password",
    required: true,
    autocomplete: isSignup ? "new-password" : "current-password",
    testid: `${mode}-password`,
  });
  const displayName = isSignup
    ? h("input", { name: "display_name", autocomplete: "name", testid: "signup-display-name" })
    : null;
  const submit = h(
    "button",
    { type: "submit", class: "primary wide", testid: `${mode}-submit` },
    isSignup ? "Create account" : "Log in",
  );

  const form = h(
    "form",
    { class: "stack", testid: `${mode}-form`, novalidate: true },
    field("Username", username),
    isSignup ? field("Display name (optional)", displayName) : null,
    field("Password", password),
    error.el,
    submit,
  );

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.clear();
    const name = username.value.trim();
    if (!name || !password.value) {
      error.show("Enter a username and a password.");
      return;
    }
    await busy(
      submit,
      async () => {
        if (isSignup) await apiCalls.signUp(name, password.value, displayName.value.trim());
        await logInAs(name, password.value);
        renderNav();
        toast(isSignup ? `Welcome, @${state.me.username}!` : `Logged in as @${state.me.username}.`);
        go("#/");
      },
      (message) => error.show(message),
    );
  });

  return h(
    "section",
    { class: "auth card", testid: "auth-view" },
    h("h1", {}, isSignup ? "Join socialnet" : "Welcome back"),
    h(
      "p",
      { class: "muted" },
      isSignup ? "Create an account to post and follow people." : "Log in to see your timeline.",
    ),
    tabs,
    form,
  );
}

// ---------------------------------------------------------------------------------------------
// Posts

function postCard(post, { onDeleted } = {}) {
  const author = post.author ?? { username: "?", display_name: "" };
  const mine = Boolean(state.me && author.username === state.me.username);
  let liked = Boolean(post.liked_by_me);
  let likeCount = Number(post.like_count ?? 0);
  let commentCount = Number(post.comment_count ?? 0);

  const likeCountEl = h("span", { testid: "like-count" }, String(likeCount));
  const likeButton = h(
    "button",
    {
      type: "button",
      class: "action like",
      testid: "like-button",
      "aria-pressed": String(liked),
      title: liked ? "Unlike" : "Like",
    },
    icon("heart"),
    likeCountEl,
  );
  const paintLike = () => {
    likeButton.setAttribute("aria-pressed", String(liked));
    likeButton.title = liked ? "Unlike" : "Like";
    likeCountEl.textContent = String(likeCount);
  };
  likeButton.addEventListener("click", async () => {
    if (!state.token) {
      go("#/login");
      return;
    }
    const want = !liked;
    liked = want;
    likeCount += want ? 1 : -1;
    paintLike();
    const ok = await busy(likeButton, async () => {
      await apiCalls.like(post.id, want);
      return true;
    });
    if (!ok) {
      liked = !want;
      likeCount += want ? -1 : 1;
      paintLike();
    }
  });

  const commentCountEl = h("span", { testid: "comment-count" }, String(commentCount));
  const commentsButton = h(
    "button",
    { type: "button", class: "action", testid: "comments-button", "aria-expanded": "false", title: "Comments" },
    icon("comment"),
    commentCountEl,
  );
  const commentsSection = h("section", { class: "comments", testid: "comments", hidden: true });
  commentsButton.addEventListener("click", async () => {
    const open = commentsSection.hidden;
    commentsSection.hidden = !open;
    commentsButton.setAttribute("aria-expanded", String(open));
    if (open) {
      await fillComments(commentsSection, post, (count) => {
        commentCount = count;
        commentCountEl.textContent = String(commentCount);
      });
    }
  });

  let deleteButton = null;
  if (mine) {
    let armed = 0;
    deleteButton = h(
      "button",
      { type: "button", class: "action danger", testid: "delete-button", title: "Delete post" },
      icon("trash"),
      h("span", { class: "label" }, "Delete"),
    );
    const label = deleteButton.querySelector(".label");
    deleteButton.addEventListener("click", async () => {
      if (!armed) {
        // Two clicks to delete: the first arms the button for a few seconds.
        label.textContent = "Delete?";
        deleteButton.classList.add("armed");
        armed = setTimeout(() => {
          armed = 0;
          label.textContent = "Delete";
          deleteButton.classList.remove("armed");
        }, 4000);
        return;
      }
      clearTimeout(armed);
      armed = 0;
      const done = await busy(deleteButton, async () => {
        await apiCalls.deletePost(post.id);
        return true;
      });
      if (done) {
        card.remove();
        toast("Post deleted.");
        onDeleted?.();
      } else {
        label.textContent = "Delete";
        deleteButton.classList.remove("armed");
      }
    });
  }

  const card = h(
    "article",
    { class: "post card", testid: "post", "data-post-id": String(post.id) },
    avatar(author),
    h(
      "div",
      { class: "post-body" },
      h(
        "header",
        { class: "post-head" },
        h("a", { class: "author", href: userHref(author.username), testid: "post-author" },
          author.display_name || author.username),
        h("span", { class: "handle" }, `@${author.username}`),
        h("span", { class: "dot", "aria-hidden": "true" }, "·"),
        timeEl(post.created_at),
      ),
      h("p", { class: "post-text", testid: "post-text" }, post.text ?? ""),
      h("footer", { class: "post-actions" }, likeButton, commentsButton, deleteButton),
      commentsSection,
    ),
  );
  return card;
}

async function fillComments(section, post, setCount) {
  const list = h("ul", { class: "comment-list", testid: "comment-list" });
  const status = h("p", { class: "muted small" }, "Loading comments…");
  section.replaceChildren(status, list);
  try {
    const data = await apiCalls.comments(post.id);
    const items = Array.isArray(data) ? data : (data?.items ?? []);
    status.remove();
    for (const comment of items) list.append(commentItem(comment));
    if (!items.length) list.append(h("li", { class: "muted small empty" }, "No comments yet."));
  } catch (error) {
    status.textContent = error.message;
    status.className = "error";
  }
  if (!state.token) {
    section.append(
      h("p", { class: "muted small" }, h("a", { href: "#/login" }, "Log in"), " to comment."),
    );
    return;
  }
  const input = h("input", {
    name: "comment",
    placeholder: "Write a comment…",
    maxlength: "2000",
    testid: "comment-input",
    "aria-label": "Comment",
  });
  const submit = h("button", { type: "submit", class: "small", testid: "comment-submit" }, "Reply");
  const error = errorBox("comment-error");
  const form = h("form", { class: "comment-form" }, input, submit);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.clear();
    const text = input.value.trim();
    if (!text) return;
    await busy(
      submit,
      async () => {
        const comment = await apiCalls.addComment(post.id, text);
        list.querySelector(".empty")?.remove();
        list.append(commentItem(comment ?? { text, author: state.me, created_at: new Date().toISOString() }));
        input.value = "";
        setCount(list.querySelectorAll("[data-testid=comment]").length);
      },
      (message) => error.show(message),
    );
  });
  section.append(form, error.el);
}

function commentItem(comment) {
  const author = comment.author ?? { username: comment.username ?? "?", display_name: "" };
  return h(
    "li",
    { class: "comment", testid: "comment" },
    h("a", { class: "author", href: userHref(author.username) }, author.display_name || author.username),
    " ",
    h("span", { class: "handle" }, `@${author.username}`),
    " ",
    comment.created_at ? timeEl(comment.created_at) : null,
    h("p", { class: "comment-text", testid: "comment-text" }, comment.text ?? ""),
  );
}

// A paged list of posts with a "Load more" button driven by next_cursor.
function postFeed(fetchPage, { testid, empty }) {
  const list = h("div", { class: "feed", testid });
  const status = h("p", { class: "muted center", testid: "feed-status" }, "Loading…");
  const more = h("button", { type: "button", class: "wide", testid: "load-more", hidden: true }, "Load more");
  const root = h("div", { class: "feed-wrap" }, list, status, more);
  let cursor = null;
  let count = 0;

  const refreshEmpty = () => {
    if (count === 0 && !cursor) {
      status.textContent = empty;
      status.className = "muted center empty-state";
      status.hidden = false;
    }
  };
  const onDeleted = () => {
    count -= 1;
    refreshEmpty();
  };

  async function load() {
    list.dataset.state = "loading";
    list.setAttribute("aria-busy", "true");
    try {
      const page = await fetchPage(cursor);
      const items = page?.items ?? [];
      for (const post of items) list.append(postCard(post, { onDeleted }));
      count += items.length;
      cursor = page?.next_cursor ?? null;
      more.hidden = !cursor;
      status.hidden = true;
      refreshEmpty();
      list.dataset.state = "ready";
    } catch (error) {
      status.textContent = error.message;
      status.className = "error center";
      status.hidden = false;
      list.dataset.state = "error";
    }
    list.removeAttribute("aria-busy");
  }
  more.addEventListener("click", () => busy(more, load));

  return {
    el: root,
    load,
    prepend(post) {
      list.prepend(postCard(post, { onDeleted }));
      count += 1;
      status.hidden = true;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Timeline

function composer(onPosted) {
  const text = h("textarea", {
    name: "text",
    rows: "3",
    placeholder: "What's happening?",
    testid: "compose-text",
    "aria-label": "New post",
  });
  const counter = h("span", { class: "counter", testid: "compose-counter", "aria-live": "polite" });
  const submit = h("button", { type: "submit", class: "primary", testid: "compose-submit" }, "Post");
  const error = errorBox("compose-error");

  const update = () => {
    const used = charCount(text.value);
    counter.textContent = `${used} / ${MAX_POST_CHARS}`;
    counter.classList.toggle("over", used > MAX_POST_CHARS);
    counter.classList.toggle("near", used > MAX_POST_CHARS - 50 && used <= MAX_POST_CHARS);
    submit.disabled = used > MAX_POST_CHARS || text.value.trim() === "";
  };
  text.addEventListener("input", update);

  const form = h(
    "form",
    { class: "compose card", testid: "compose-form" },
    state.me ? avatar(state.me) : null,
    h(
      "div",
      { class: "compose-body" },
      text,
      error.el,
      h("div", { class: "compose-foot" }, counter, submit),
    ),
  );
  const send = async () => {
    error.clear();
    if (submit.disabled) return;
    const value = text.value;
    await busy(
      submit,
      async () => {
        const post = await apiCalls.createPost(value);
        text.value = "";
        onPosted(post);
      },
      (message) => error.show(message),
    );
    update();
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  text.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      send();
    }
  });
  update();
  return form;
}

function timelineView() {
  if (!state.token) {
    go("#/login");
    return h("div");
  }
  const feed = postFeed((cursor) => apiCalls.timeline(cursor), {
    testid: "timeline",
    empty: "Your timeline is empty. Write your first post, or find people to follow.",
  });
  const refresh = h(
    "button",
    { type: "button", class: "small", testid: "timeline-refresh", onclick: () => route() },
    "Refresh",
  );
  const root = h(
    "section",
    { class: "stack", testid: "timeline-view" },
    h("div", { class: "section-head" }, h("h1", {}, "Home"), refresh),
    composer((post) => feed.prepend(post)),
    feed.el,
  );
  feed.load();
  return root;
}

// ---------------------------------------------------------------------------------------------
// User page

function userView(username) {
  const root = h("section", { class: "stack", testid: "user-view" });
  const card = h("div", { class: "profile card", testid: "profile" }, h("p", { class: "muted" }, "Loading…"));
  root.append(card);

  (async () => {
    let profile;
    try {
      profile = await apiCalls.profile(username);
    } catch (error) {
      const message = error.status === 404 ? `There is no user @${username}.` : error.message;
      card.replaceChildren(
        h(
          "div",
          { class: "stack profile-body" },
          h("p", { class: "error", role: "alert", testid: "profile-error" }, message),
          h("a", { href: "#/" }, "← Back to the timeline"),
        ),
      );
      return;
    }
    renderProfile(card, profile);
    const feed = postFeed((cursor) => apiCalls.userPosts(profile.username, cursor), {
      testid: "user-posts",
      empty: `@${profile.username} has not posted yet.`,
    });
    root.append(h("h2", { class: "section-title" }, "Posts"), feed.el);
    await feed.load();
  })();
  return root;
}

function renderProfile(card, profile) {
  const isMe = Boolean(state.me && state.me.username === profile.username);
  let following = Boolean(profile.followed_by_me);
  let followers = Number(profile.followers ?? 0);

  const followersEl = h("strong", { testid: "followers-count" }, String(followers));
  const stats = h(
    "p",
    { class: "stats" },
    h("span", {}, followersEl, " followers"),
    h("span", {}, h("strong", { testid: "following-count" }, String(profile.following ?? 0)), " following"),
  );

  let action = null;
  if (isMe) {
    action = h(
      "button",
      { type: "button", testid: "edit-profile", onclick: () => renderEditor(card, profile) },
      "Edit profile",
    );
  } else if (state.token) {
    action = h("button", { type: "button", testid: "follow-button" });
    const paint = () => {
      action.textContent = following ? "Unfollow" : "Follow";
      action.className = following ? "" : "primary";
      action.setAttribute("aria-pressed", String(following));
      followersEl.textContent = String(followers);
    };
    action.addEventListener("click", () =>
      busy(action, async () => {
        await apiCalls.follow(profile.username, !following);
        following = !following;
        followers += following ? 1 : -1;
        paint();
        toast(following ? `You follow @${profile.username}.` : `You unfollowed @${profile.username}.`);
      }),
    );
    paint();
  } else {
    action = h("a", { class: "button primary", href: "#/login", testid: "follow-login" }, "Log in to follow");
  }

  const joined = new Date(profile.created_at);
  card.replaceChildren(
    avatar(profile, "large"),
    h(
      "div",
      { class: "profile-body" },
      h(
        "div",
        { class: "profile-head" },
        h(
          "div",
          {},
          h("h1", { testid: "profile-name" }, profile.display_name || profile.username),
          h("p", { class: "handle", testid: "profile-username" }, `@${profile.username}`),
        ),
        action,
      ),
      profile.bio ? h("p", { class: "bio", testid: "profile-bio" }, profile.bio) : null,
      stats,
      Number.isNaN(joined.getTime()) ? null : h("p", { class: "muted small" }, `Joined ${longDate.format(joined)}`),
    ),
  );
}

function renderEditor(card, profile) {
  const displayName = h("input", {
    name: "display_name",
    value: profile.display_name ?? "",
    testid: "edit-display-name",
  });
  const bio = h("textarea", { name: "bio", rows: "3", testid: "edit-bio" });
  bio.value = profile.bio ?? "";
  const error = errorBox();
  const save = h("button", { type: "submit", class: "primary", testid: "edit-save" }, "Save");
  const cancel = h(
    "button",
    { type: "button", onclick: () => renderProfile(card, profile) },
    "Cancel",
  );
  const form = h(
    "form",
    { class: "stack profile-body" },
    h("label", { class: "field" }, h("span", { class: "field-label" }, "Display name"), displayName),
    h("label", { class: "field" }, h("span", { class: "field-label" }, "Bio"), bio),
    error.el,
    h("div", { class: "row" }, save, cancel),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.clear();
    await busy(
      save,
      async () => {
        // The API rejects an empty display name (1..50 chars); leave it unchanged instead.
        const changes = { bio: bio.value.trim() };
        if (displayName.value.trim()) changes.display_name = displayName.value.trim();
        const updated = await apiCalls.updateMe(changes);
        const merged = { ...profile, ...(updated ?? {}) };
        setSession(state.token, merged);
        renderNav();
        renderProfile(card, merged);
        toast("Profile saved.");
      },
      (message) => error.show(message),
    );
  });
  card.replaceChildren(avatar(profile, "large"), form);
  displayName.focus();
}

// ---------------------------------------------------------------------------------------------
// Router

function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [, first = "", second = ""] = hash.split("/");
  let content;
  if (first === "login" || first === "signup") {
    if (state.token) {
      go("#/");
      return;
    }
    content = authView(first);
    document.title = first === "signup" ? "Sign up · socialnet" : "Log in · socialnet";
  } else if (first === "u" && second) {
    let username;
    try {
      username = decodeURIComponent(second);
    } catch {
      username = second;
    }
    content = userView(username);
    document.title = `@${username} · socialnet`;
  } else if (!state.token) {
    go("#/login");
    return;
  } else {
    content = timelineView();
    document.title = "Home · socialnet";
  }
  renderNav();
  view().replaceChildren(content);
  window.scrollTo(0, 0);
}

function wireSearch() {
  const form = document.querySelector("[data-testid=search-form]");
  const input = document.getElementById("search-input");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const name = input.value.trim().replace(/^@/, "");
    if (!name) return;
    input.value = "";
    input.blur();
    go(userHref(name));
  });
}

async function start() {
  wireSearch();
  window.addEventListener("hashchange", route);
  if (state.token) {
    // Refresh who we are; an expired token is dropped by api() on the 401.
    try {
      const me = await apiCalls.me();
      setSession(state.token, me);
    } catch (error) {
      if (error.status === 401 || !state.me) toast(error.message, "error");
    }
  }
  route();
}

start();
