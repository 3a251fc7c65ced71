// The ferry dashboard: the jobs as they change, a job's output live (ANSI colours rendered
// as styled text, never as HTML), kill and restart, the peers, the hub, and small charts.
// It speaks only to the daemon that served it: /api/v1 (JSON) and its event streams.
"use strict";

const $ = (selector) => document.querySelector(selector);

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props || {});
  for (const child of children) {
    node.append(child);
  }
  return node;
}

function setStatus(text) {
  $("#status").textContent = text;
}

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: body === undefined ? {} : { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  const text = await response.text();
  const value = text ? JSON.parse(text) : {};
  if (!response.ok) {
    const message = value.error ? value.error.message : response.statusText;
    setStatus(`${method} ${path}: ${message}`);
    throw new Error(message);
  }
  return value;
}

// ---- ANSI colours: SGR sequences become classes; every other escape is dropped.

class AnsiText {
  constructor(target) {
    this.target = target;
    this.rest = "";
    this.style = {};
  }

  reset() {
    this.style = {};
    this.rest = "";
  }

  write(text, stream) {
    text = this.rest + text;
    this.rest = "";
    const escape = /\x1b\[([0-9;?]*)([A-Za-z])|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[()][A-Za-z0-9]|\x1b[=>78]/g;
    let at = 0;
    let match;
    while ((match = escape.exec(text)) !== null) {
      this.span(text.slice(at, match.index), stream);
      if (match[2] === "m") {
        this.sgr(match[1]);
      }
      at = escape.lastIndex;
    }
    let tail = text.slice(at);
    const open = tail.lastIndexOf("\x1b");
    if (open !== -1 && tail.length - open < 32) {
      this.rest = tail.slice(open);
      tail = tail.slice(0, open);
    }
    this.span(tail.replace(/\r(?!\n)/g, ""), stream);
  }

  span(text, stream) {
    if (!text) {
      return;
    }
    const classes = [];
    if (stream === "stderr") classes.push("stderr");
    if (this.style.bold) classes.push("ansi-bold");
    if (this.style.dim) classes.push("ansi-dim");
    if (this.style.italic) classes.push("ansi-italic");
    if (this.style.underline) classes.push("ansi-underline");
    if (typeof this.style.fg === "number") classes.push(`fg-${this.style.fg}`);
    if (typeof this.style.bg === "number") classes.push(`bg-${this.style.bg}`);
    const node = el("span", { className: classes.join(" ") });
    node.textContent = text;
    if (typeof this.style.fg === "string") node.style.color = this.style.fg;
    if (typeof this.style.bg === "string") node.style.backgroundColor = this.style.bg;
    this.target.append(node);
  }

  sgr(params) {
    const codes = params === "" ? [0] : params.split(";").map((p) => parseInt(p, 10) || 0);
    for (let i = 0; i < codes.length; i++) {
      const code = codes[i];
      if (code === 0) this.style = {};
      else if (code === 1) this.style.bold = true;
      else if (code === 2) this.style.dim = true;
      else if (code === 3) this.style.italic = true;
      else if (code === 4) this.style.underline = true;
      else if (code === 22) this.style.bold = this.style.dim = false;
      else if (code === 23) this.style.italic = false;
      else if (code === 24) this.style.underline = false;
      else if (code >= 30 && code <= 37) this.style.fg = code - 30;
      else if (code >= 90 && code <= 97) this.style.fg = code - 90 + 8;
      else if (code === 39) delete this.style.fg;
      else if (code >= 40 && code <= 47) this.style.bg = code - 40;
      else if (code === 49) delete this.style.bg;
      else if ((code === 38 || code === 48) && codes[i + 1] === 5) {
        const n = codes[i + 2] & 255;
        this.setColour(code, n < 16 ? n : palette(n));
        i += 2;
      } else if ((code === 38 || code === 48) && codes[i + 1] === 2) {
        const [r, g, b] = codes.slice(i + 2, i + 5).map((v) => (v | 0) & 255);
        this.setColour(code, `rgb(${r}, ${g}, ${b})`);
        i += 4;
      }
    }
  }

  setColour(code, colour) {
    if (code === 38) this.style.fg = colour;
    else this.style.bg = colour;
  }
}

// The 256-colour palette past the first 16 entries.
function palette(n) {
  if (n >= 232) {
    const v = 8 + (n - 232) * 10;
    return `rgb(${v}, ${v}, ${v})`;
  }
  const i = n - 16;
  const level = (x) => (x === 0 ? 0 : 55 + x * 40);
  return `rgb(${level(Math.floor(i / 36))}, ${level(Math.floor(i / 6) % 6)}, ${level(i % 6)})`;
}

function decodeChunk(data) {
  if (typeof data.text === "string") {
    return data.text;
  }
  const bytes = Uint8Array.from(atob(data.base64), (c) => c.charCodeAt(0));
  return new TextDecoder().decode(bytes);
}

// ---- Jobs.

let selected = null;
let outputStream = null;
const ansi = new AnsiText($("#output"));

function runTime(job) {
  const seconds = job.run_time_us / 1e6;
  return seconds < 60 ? `${seconds.toFixed(seconds < 10 ? 2 : 1)} s` : `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
}

function jobRow(job) {
  const live = job.state === "running" || job.state === "queued" || job.state === "paused";
  const kill = el("button", { className: "kill", textContent: "kill", disabled: !live });
  kill.addEventListener("click", (event) => {
    event.stopPropagation();
    api("POST", `/api/v1/jobs/${job.id}/kill`, { signal: "TERM" }).catch(() => {});
  });
  const restart = el("button", { className: "restart", textContent: "restart" });
  restart.addEventListener("click", (event) => {
    event.stopPropagation();
    api("POST", `/api/v1/jobs/${job.id}/restart`).then((r) => select(r.id)).catch(() => {});
  });
  const row = el(
    "tr",
    { className: job.id === selected ? "selected" : "" },
    el("td", { textContent: String(job.id) }),
    el("td", { className: `state state-${job.state}`, textContent: job.state }),
    el("td", { className: "command", textContent: job.command.join(" ") }),
    el("td", { textContent: job.group }),
    el("td", { textContent: runTime(job) }),
    el("td", {}, kill, " ", restart),
  );
  row.dataset.id = String(job.id);
  row.dataset.state = job.state;
  row.addEventListener("click", () => select(job.id));
  return row;
}

function showJobs(jobs) {
  const body = $("#jobs tbody");
  const rows = jobs.slice().sort((a, b) => b.id - a.id).slice(0, 200).map(jobRow);
  body.replaceChildren(...rows);
}

function select(id) {
  selected = id;
  for (const row of document.querySelectorAll("#jobs tbody tr")) {
    row.classList.toggle("selected", row.dataset.id === String(id));
  }
  if (outputStream) {
    outputStream.close();
  }
  $("#output").replaceChildren();
  ansi.reset();
  $("#output-title").textContent = `of job ${id}`;
  outputStream = new EventSource(`/api/v1/jobs/${id}/events`);
  const out = $("#output");
  const append = (stream) => (event) => {
    const follow = out.scrollTop + out.clientHeight >= out.scrollHeight - 4;
    ansi.write(decodeChunk(JSON.parse(event.data)), stream);
    if (follow) out.scrollTop = out.scrollHeight;
  };
  outputStream.addEventListener("stdout", append("stdout"));
  outputStream.addEventListener("stderr", append("stderr"));
  outputStream.addEventListener("skipped", (event) => {
    const skipped = JSON.parse(event.data);
    ansi.span(`\n[${skipped.to - skipped.from} bytes the log no longer holds]\n`, "stderr");
  });
  outputStream.addEventListener("exit", (event) => {
    const exit = JSON.parse(event.data);
    const how = exit.error ? exit.error : exit.signal ? `killed by signal ${exit.signal}` : `exit status ${exit.exit_code}`;
    const end = el("div", { className: "exit", textContent: `[job ${id} ended: ${how}]` });
    out.append(end);
    outputStream.close();
    outputStream = null;
  });
}

function watchJobs() {
  const stream = new EventSource("/api/v1/jobs/changes");
  stream.addEventListener("open", () => setStatus("live"));
  stream.addEventListener("jobs", (event) => showJobs(JSON.parse(event.data).jobs));
  stream.addEventListener("error", () => setStatus("reconnecting…"));
}

// Splits a command line into words as a shell would for plain words and quotes.
function words(line) {
  const found = [];
  const pattern = /"((?:[^"\\]|\\.)*)"|'([^']*)'|(\S+)/g;
  let match;
  while ((match = pattern.exec(line)) !== null) {
    found.push(match[1] !== undefined ? match[1].replace(/\\(.)/g, "$1") : match[2] !== undefined ? match[2] : match[3]);
  }
  return found;
}

$("#run-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const argv = words($("#run-command").value);
  if (argv.length === 0) return;
  api("POST", "/api/v1/jobs", { argv }).then((r) => {
    $("#run-command").value = "";
    select(r.id);
  }).catch(() => {});
});

// ---- Peers.

async function showPeers() {
  try {
    const { peers } = await api("GET", "/api/v1/peers");
    const rows = peers.map((peer) => el(
      "tr",
      {},
      el("td", { textContent: peer.id }),
      el("td", { textContent: peer.name }),
      el("td", { textContent: peer.dialect }),
      el("td", { textContent: peer.address }),
      el("td", { textContent: peer.member ? "member" : "" }),
    ));
    $("#peers tbody").replaceChildren(...rows);
  } catch (e) {
    // Said in the status line.
  }
}

// ---- Hub.

let me = null;

function hubLine(text, kind) {
  const log = $("#hub-log");
  log.append(el("li", { className: kind, textContent: text }));
  log.scrollTop = log.scrollHeight;
}

function joinHub() {
  const stream = new EventSource("/api/v1/hub/events?name=web");
  stream.addEventListener("joined", (event) => {
    const joined = JSON.parse(event.data);
    me = joined.id;
    $("#hub-me").textContent = `as ${joined.name}`;
    hubLine(`joined as ${joined.name}; members: ${joined.members.map((m) => m.name).join(", ") || "none"}`, "presence");
  });
  stream.addEventListener("message", (event) => {
    const message = JSON.parse(event.data);
    hubLine(`${message.name}${message.to ? " (to you)" : ""}: ${message.text}`, "message");
  });
  stream.addEventListener("presence", (event) => {
    const p = JSON.parse(event.data);
    hubLine(`${p.name} (${p.dialect}) ${p.joined ? "joined" : `left: ${p.reason}`}`, "presence");
  });
  stream.addEventListener("missed", (event) => hubLine(JSON.parse(event.data).message, "presence"));
}

$("#hub-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("#hub-text").value;
  if (!text || !me) return;
  api("POST", "/api/v1/hub/messages", { as: me, text }).then(() => {
    hubLine(`you: ${text}`, "mine");
    $("#hub-text").value = "";
  }).catch(() => {});
});

// ---- Charts.

const history = { jobs: [], output: [] };
let last = null;

function drawLine(canvas, values, unit) {
  const context = canvas.getContext("2d");
  const { width, height } = canvas;
  context.clearRect(0, 0, width, height);
  const top = Math.max(1, ...values);
  context.strokeStyle = "#5fb3b3";
  context.beginPath();
  values.forEach((value, i) => {
    const x = (i / 59) * (width - 1);
    const y = height - 4 - (value / top) * (height - 18);
    if (i === 0) context.moveTo(x, y);
    else context.lineTo(x, y);
  });
  context.stroke();
  context.fillStyle = "#7b8794";
  context.font = "11px sans-serif";
  context.fillText(`max ${formatRate(top, unit)}, now ${formatRate(values[values.length - 1] || 0, unit)}`, 4, 12);
}

function formatRate(value, unit) {
  if (unit === "B") {
    const units = ["B", "KiB", "MiB", "GiB"];
    let i = 0;
    while (value >= 1024 && i < units.length - 1) {
      value /= 1024;
      i++;
    }
    return `${value.toFixed(1)} ${units[i]}/s`;
  }
  return `${value.toFixed(1)}/s`;
}

function drawBars(canvas, counts) {
  const context = canvas.getContext("2d");
  const { width, height } = canvas;
  context.clearRect(0, 0, width, height);
  const entries = Object.entries(counts);
  const top = Math.max(1, ...entries.map(([, n]) => n));
  const bar = width / Math.max(1, entries.length);
  context.font = "11px sans-serif";
  entries.forEach(([dialect, n], i) => {
    const h = (n / top) * (height - 30);
    context.fillStyle = "#6699cc";
    context.fillRect(i * bar + 4, height - 16 - h, bar - 8, h);
    context.fillStyle = "#d8dee9";
    context.fillText(`${dialect} ${n}`, i * bar + 4, height - 4);
  });
}

async function tick() {
  try {
    const stats = await api("GET", "/api/v1/stats");
    const now = performance.now();
    if (last) {
      const seconds = (now - last.at) / 1000;
      history.jobs.push(Math.max(0, (stats.jobs_started - last.stats.jobs_started) / seconds));
      history.output.push(Math.max(0, (stats.output_bytes - last.stats.output_bytes) / seconds));
      for (const series of Object.values(history)) {
        while (series.length > 60) series.shift();
      }
      drawLine($("#chart-jobs"), history.jobs, "jobs");
      drawLine($("#chart-output"), history.output, "B");
    }
    drawBars($("#chart-dialects"), stats.connections);
    last = { at: now, stats };
  } catch (e) {
    // Said in the status line.
  }
}

watchJobs();
joinHub();
showPeers();
tick();
setInterval(showPeers, 2000);
setInterval(tick, 1000);
