/* The market page: follows one pair over /v1/ws as any bot does (SPEC section 7).

   The book: a snapshot, then deltas whose sequence grows by exactly 1, each checked against its
   checksum (CRC32 of the top 10 asks then bids, as exchange/checksum.py computes it). A gap, or a
   heartbeat ahead of the book, resubscribes with since_sequence (the server replays what was
   missed); a checksum mismatch does the same once, then asks for a fresh snapshot, as
   clients/python/hkt_client/book.py does. A dropped or silent socket reconnects with backoff and
   resumes from the book's sequence. Trades, candles and (signed in) orders and balances are read
   over REST at each connect, so nothing missed while away stays missing. */
(function () {
  "use strict";

  var config = JSON.parse(document.getElementById("market-config").textContent);
  var PAIR = config.pair;
  var CHECKSUM_DEPTH = 10;
  var BOOK_ROWS = 14;           // levels a side in the ladder
  var DEPTH_LEVELS = 60;        // levels a side in the depth chart
  var TRADES_SHOWN = 60;
  var MAX_CANDLES = 1000;       // kept in memory; the chart draws what fits
  var SILENCE_MS = 20000;       // the server sends a heartbeat every few quiet seconds: this long with nothing is a dead socket
  var PRIVATE_REFRESH_MS = 2500;
  var MAX_BACKOFF_MS = 15000;

  var $ = function (id) { return document.getElementById(id); };

  // -- numbers: the strings received are shown as they are; Number only to sort, add up and draw

  function fixed(value, places) {
    return Number(value).toLocaleString("en-US", {minimumFractionDigits: places, maximumFractionDigits: places});
  }
  function price(text) { return text == null ? "—" : fixed(text, config.price_places); }
  function size(text) { return text == null ? "—" : fixed(text, config.size_places); }
  function clock(ms) { return new Date(ms).toLocaleTimeString("en-GB", {hour12: false}); }
  function escapeHtml(text) {
    return String(text).replace(/[&<>"']/g, function (c) { return "&#" + c.charCodeAt(0) + ";"; });
  }

  // -- the checksum (unsigned CRC32, IEEE polynomial)

  var CRC_TABLE = (function () {
    var table = new Uint32Array(256);
    for (var n = 0; n < 256; n++) {
      var c = n;
      for (var k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320 ^ (c >>> 1) : c >>> 1;
      table[n] = c >>> 0;
    }
    return table;
  })();
  function crc32(text) {  // the text is digits only, so one byte per character
    var crc = 0xFFFFFFFF;
    for (var i = 0; i < text.length; i++) crc = CRC_TABLE[(crc ^ text.charCodeAt(i)) & 0xFF] ^ (crc >>> 8);
    return (crc ^ 0xFFFFFFFF) >>> 0;
  }
  function compact(amount) { return amount.replace(".", "").replace(/^0+/, ""); }

  // -- the local book: price (as a Number) -> [price, size] strings received

  function Book() { this.sequence = null; this.bids = new Map(); this.asks = new Map(); }
  Book.prototype.sorted = function (side, n) {
    var levels = Array.from((side === "bids" ? this.bids : this.asks).values());
    levels.sort(side === "bids" ? function (a, b) { return b[0] - a[0]; } : function (a, b) { return a[0] - b[0]; });
    return n === undefined ? levels : levels.slice(0, n);
  };
  Book.prototype.checksum = function () {
    var levels = this.sorted("asks", CHECKSUM_DEPTH).concat(this.sorted("bids", CHECKSUM_DEPTH));
    return crc32(levels.map(function (l) { return compact(l[0]) + compact(l[1]); }).join(""));
  };
  function levelsMap(levels) {
    var map = new Map();
    levels.forEach(function (l) { if (Number(l[1]) !== 0) map.set(Number(l[0]), [l[0], l[1]]); });
    return map;
  }
  function applyLevels(map, levels) {
    levels.forEach(function (l) {
      if (Number(l[1]) === 0) map.delete(Number(l[0])); else map.set(Number(l[0]), [l[0], l[1]]);
    });
  }

  // -- page state

  var state = {
    book: new Book(), ws: null, awaitingBookAck: false, mismatchAt: null, backoff: 0,
    reconnects: 0, resyncs: 0, deltas: 0, lastMessage: 0, trades: new Map(), candles: [],
    dirty: {}, privateTimer: null, privateDue: 0, connectTimer: null, hasSnapshot: false,
  };

  function schedule(part) {
    if (!Object.keys(state.dirty).length) requestAnimationFrame(render);
    state.dirty[part] = true;
  }
  function render() {
    var dirty = state.dirty;
    state.dirty = {};
    if (dirty.book) { renderBook(); drawDepth(); }
    if (dirty.trades) renderTrades();
    if (dirty.candles) drawCandles();
  }

  // -- the connection

  function setStatus(kind, text) {
    var element = $("conn-status");
    element.dataset.state = kind;
    element.lastElementChild.textContent = text;
  }

  function connect() {
    state.connectTimer = null;
    var ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/v1/ws");
    state.ws = ws;
    state.lastMessage = Date.now();
    ws.onopen = function () {
      if (state.ws !== ws) return;
      state.awaitingBookAck = true;
      var book = {name: "orderbook", pair: PAIR};
      if (state.book.sequence !== null) book.since_sequence = state.book.sequence;
      send({op: "subscribe", channels: [book, {name: "trades", pair: PAIR}, {name: "ticker", pair: PAIR}]});
      loadTrades();
      loadCandles();
      refreshPrivate(true);
    };
    ws.onmessage = function (event) {
      if (state.ws !== ws) return;
      state.lastMessage = Date.now();
      handle(JSON.parse(event.data));
    };
    ws.onclose = function () {
      if (state.ws !== ws) return;
      state.ws = null;
      reconnectLater();
    };
  }

  function reconnectLater() {
    if (state.connectTimer) return;
    state.reconnects += 1;
    // 0.5 s, 1 s, 2 s ... up to 15 s, each with up to 30 % jitter so that a restarted server is not hit all at once.
    state.backoff = Math.min(MAX_BACKOFF_MS, state.backoff ? state.backoff * 2 : 500);
    var delay = state.backoff * (1 + Math.random() * 0.3);
    setStatus("reconnecting", "Reconnecting in " + Math.ceil(delay / 1000) + " s…");
    state.connectTimer = setTimeout(connect, delay);
  }

  function dropConnection() {
    var ws = state.ws;
    if (ws) { state.ws = null; ws.close(); reconnectLater(); }
  }

  function send(message) {
    if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(message));
  }

  setInterval(function () {  // a socket that went silent (a network gone away) never fires onclose in time
    if (state.ws && Date.now() - state.lastMessage > SILENCE_MS) dropConnection();
  }, 2000);

  function resync(sinceSequence) {
    state.resyncs += 1;
    state.awaitingBookAck = true;
    var book = {name: "orderbook", pair: PAIR};
    if (sinceSequence !== null) book.since_sequence = sinceSequence;
    send({op: "subscribe", channels: [book]});
  }

  function handle(message) {
    switch (message.type) {
      case "subscribed":
        if (message.channel === "orderbook") { state.awaitingBookAck = false; bookSynced(); }
        break;
      case "snapshot":
        if (message.pair === PAIR && !state.awaitingBookAck) applySnapshot(message);
        break;
      case "delta":
        if (message.pair === PAIR && !state.awaitingBookAck) applyDelta(message);
        break;
      case "heartbeat":
        var latest = (message.sequences || {})[PAIR];
        if (latest > state.book.sequence && state.book.sequence !== null && !state.awaitingBookAck) resync(state.book.sequence);
        break;
      case "trade":
        if (message.pair === PAIR) { addTrades([message], true); addToCandles(message); activity(); }
        break;
      case "ticker":
        if (message.pair === PAIR) renderTicker(message);
        break;
      case "error":
        if (window.console) console.warn("market stream:", message.code, message.message);
        break;
    }
  }

  function applySnapshot(message) {
    var bids = levelsMap(message.bids), asks = levelsMap(message.asks);
    var candidate = new Book();
    candidate.bids = bids; candidate.asks = asks;
    if (message.checksum !== undefined && candidate.checksum() !== message.checksum) { resync(null); return; }
    candidate.sequence = message.sequence;
    state.book = candidate;
    state.hasSnapshot = true;
    bookSynced();
  }

  function applyDelta(message) {
    var book = state.book;
    if (book.sequence === null) { resync(null); return; }
    if (message.sequence <= book.sequence) return;            // in the snapshot or replay already
    if (message.sequence !== book.sequence + 1) { resync(book.sequence); return; }
    var next = new Book();
    next.bids = new Map(book.bids); next.asks = new Map(book.asks);
    applyLevels(next.bids, message.bids); applyLevels(next.asks, message.asks);
    if (next.checksum() !== message.checksum) {
      // Resume first; if the same delta fails again the local book is wrong: take a snapshot.
      var again = state.mismatchAt === message.sequence;
      state.mismatchAt = message.sequence;
      resync(again ? null : book.sequence);
      return;
    }
    next.sequence = message.sequence;
    state.book = next;
    state.deltas += 1;
    bookSynced();
    activity();
  }

  function bookSynced() {
    state.backoff = 0;
    setStatus("live", "Live");
    schedule("book");
  }

  // -- REST reads

  function getJson(url) {
    return fetch(url, {credentials: "same-origin", headers: {Accept: "application/json"}}).then(function (response) {
      if (!response.ok) throw new Error(url + ": " + response.status);
      return response.json();
    });
  }

  function loadTrades() {
    getJson("/v1/trades/" + encodeURIComponent(PAIR) + "?limit=" + TRADES_SHOWN)
      .then(function (body) { addTrades(body.trades, false); })
      .catch(function () { /* the stream's trades still show; the next connect reads again */ });
  }

  function loadCandles() {
    getJson(config.candles_url).then(function (rows) {
      state.candles = rows.map(function (r) {
        return {t: r[0], o: Number(r[1]), h: Number(r[2]), l: Number(r[3]), c: Number(r[4]), v: Number(r[5])};
      });
      schedule("candles");
    }).catch(function () {});
  }

  // -- trades and candles

  function addTrades(trades, live) {
    trades.forEach(function (t) {
      if (!state.trades.has(t.trade_id)) state.trades.set(t.trade_id, {trade: t, fresh: live});
    });
    var ids = Array.from(state.trades.keys()).sort(function (a, b) { return b - a; });
    ids.slice(TRADES_SHOWN).forEach(function (id) { state.trades.delete(id); });
    schedule("trades");
  }

  function renderTrades() {
    var ids = Array.from(state.trades.keys()).sort(function (a, b) { return b - a; });
    $("trades").innerHTML = ids.map(function (id) {
      var entry = state.trades.get(id), t = entry.trade;
      var html = '<div class="mk-row ' + (t.taker_side === "buy" ? "buy" : "sell") + (entry.fresh ? " fresh" : "") +
        '" data-trade-id="' + t.trade_id + '"><span class="p">' + price(t.price) + "</span><span>" + size(t.size) +
        '</span><span class="t">' + clock(t.time) + "</span></div>";
      entry.fresh = false;
      return html;
    }).join("") || '<p class="mk-empty">No trades yet.</p>';
  }

  function addToCandles(trade) {
    var minute = Math.floor(trade.time / 60000) * 60000, p = Number(trade.price), s = Number(trade.size);
    var last = state.candles[state.candles.length - 1];
    if (last && last.t === minute) {
      last.h = Math.max(last.h, p); last.l = Math.min(last.l, p); last.c = p; last.v += s;
    } else if (!last || minute > last.t) {
      state.candles.push({t: minute, o: p, h: p, l: p, c: p, v: s});
      if (state.candles.length > MAX_CANDLES) state.candles.shift();
    }
    schedule("candles");
  }

  // -- ticker

  function renderTicker(t) {
    $("ticker-last").textContent = price(t.last_price);
    var change = $("ticker-change");
    if (t.change_24h == null) {
      change.textContent = "—";
      change.className = "num";
    } else {
      var up = Number(t.change_24h) >= 0;
      change.textContent = (up ? "+" : "") + price(t.change_24h) + " (" + (up ? "+" : "") + t.change_24h_pct + "%)";
      change.className = "num " + (up ? "up" : "down");
      $("ticker-last").className = "num " + (up ? "up" : "down");
    }
    $("ticker-high").textContent = price(t.high_24h);
    $("ticker-low").textContent = price(t.low_24h);
    $("ticker-volume").textContent = size(t.volume_24h);
    $("ticker-quote-volume").textContent = fixed(t.quote_volume_24h, config.quote_places);
    document.title = (t.last_price ? price(t.last_price) + " · " : "") + PAIR + " · Exchange";
  }

  // -- the ladder

  function ladder(levels) {
    var total = 0;
    return levels.map(function (l) {
      total += Number(l[1]);
      return {price: l[0], size: l[1], total: total};
    });
  }

  function rowsHtml(rows, maxTotal) {
    return rows.map(function (r) {
      var width = maxTotal ? (100 * r.total / maxTotal).toFixed(1) : 0;
      return '<div class="mk-row" data-price="' + escapeHtml(r.price) + '"><i class="bar" data-width="' + width +
        '"></i><span class="p">' + price(r.price) + "</span><span>" + size(r.size) + "</span><span>" +
        fixed(r.total, config.size_places) + "</span></div>";
    }).join("");
  }

  // Through the style object, not a style attribute in the HTML, which the pages' CSP refuses.
  function setBarWidths(ladderElement) {
    ladderElement.querySelectorAll("i.bar").forEach(function (bar) { bar.style.width = bar.dataset.width + "%"; });
  }

  function renderBook() {
    var book = state.book;
    var asks = ladder(book.sorted("asks", BOOK_ROWS)), bids = ladder(book.sorted("bids", BOOK_ROWS));
    var maxTotal = Math.max(asks.length ? asks[asks.length - 1].total : 0, bids.length ? bids[bids.length - 1].total : 0);
    $("book-asks").innerHTML = rowsHtml(asks.slice().reverse(), maxTotal);
    $("book-bids").innerHTML = rowsHtml(bids, maxTotal);
    setBarWidths($("book-asks"));
    setBarWidths($("book-bids"));
    if (asks.length && bids.length) {
      var bestAsk = Number(asks[0].price), bestBid = Number(bids[0].price), spread = bestAsk - bestBid;
      $("book-mid").textContent = price((bestAsk + bestBid) / 2);
      $("book-spread-size").textContent = "spread " + fixed(spread, config.price_places) + " (" + (100 * spread / bestAsk).toFixed(3) + "%)";
    } else {
      $("book-mid").textContent = "—";
      $("book-spread-size").textContent = asks.length || bids.length ? "one-sided book" : "empty book";
    }
    var foot = $("book-state");
    if (book.sequence === null) return;
    foot.dataset.sequence = book.sequence;
    foot.textContent = "seq " + book.sequence + " · checksum ok · " + state.deltas + " deltas" +
      (state.reconnects ? " · " + state.reconnects + " reconnects" : "");
  }

  // -- charts (canvas, drawn at the device's pixel ratio)

  function canvasContext(canvas) {
    var ratio = window.devicePixelRatio || 1, width = canvas.clientWidth, height = canvas.clientHeight;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio); canvas.height = Math.round(height * ratio);
    }
    var ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    ctx.font = "11px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace";
    return {ctx: ctx, width: width, height: height};
  }

  var COLORS = {buy: "#0ecb81", sell: "#f6465d", grid: "#1f252c", text: "#848e9c", last: "#f0b90b"};
  var AXIS = 78;  // px for the price axis at the right

  function niceSteps(low, high, count) {
    var raw = (high - low) / count, magnitude = Math.pow(10, Math.floor(Math.log10(raw)));
    var step = [1, 2, 2.5, 5, 10].map(function (m) { return m * magnitude; }).find(function (s) { return s >= raw; });
    var values = [];
    for (var v = Math.ceil(low / step) * step; v <= high; v += step) values.push(v);
    return values;
  }

  function drawCandles() {
    var view = canvasContext($("price-chart")), ctx = view.ctx;
    var plotWidth = view.width - AXIS, plotHeight = view.height - 20;
    // Candles 4 to 14 px wide: a short history is not a sliver at the right, a long one shows its latest.
    var slot = Math.max(4, Math.min(14, Math.floor(plotWidth / Math.max(state.candles.length, 48))));
    var shown = state.candles.slice(-Math.max(1, Math.floor(plotWidth / slot)));
    var labelEvery = [1, 5, 10, 15, 30, 60, 120, 240].find(function (m) { return m * slot >= 64; }) || 240;
    $("price-empty").hidden = shown.length > 0;
    if (!shown.length) return;
    var low = Math.min.apply(null, shown.map(function (c) { return c.l; }));
    var high = Math.max.apply(null, shown.map(function (c) { return c.h; }));
    var pad = (high - low) * 0.08 || high * 0.001 || 1;
    low -= pad; high += pad;
    var y = function (p) { return plotHeight - (p - low) / (high - low) * plotHeight; };
    ctx.strokeStyle = COLORS.grid; ctx.fillStyle = COLORS.text; ctx.lineWidth = 1;
    niceSteps(low, high, 6).forEach(function (v) {
      ctx.beginPath(); ctx.moveTo(0, Math.round(y(v)) + 0.5); ctx.lineTo(plotWidth, Math.round(y(v)) + 0.5); ctx.stroke();
      ctx.fillText(fixed(v, config.price_places), plotWidth + 6, y(v) + 4);
    });
    var x0 = plotWidth - shown.length * slot;
    shown.forEach(function (c, i) {
      var x = x0 + i * slot + slot / 2, color = c.c >= c.o ? COLORS.buy : COLORS.sell;
      ctx.strokeStyle = color; ctx.fillStyle = color;
      ctx.beginPath(); ctx.moveTo(Math.round(x) + 0.5, y(c.h)); ctx.lineTo(Math.round(x) + 0.5, y(c.l)); ctx.stroke();
      var top = y(Math.max(c.o, c.c)), bodyHeight = Math.max(1, Math.abs(y(c.o) - y(c.c)));
      ctx.fillRect(Math.round(x - slot / 2 + 1), top, slot - 2, bodyHeight);
      if ((c.t / 60000) % labelEvery === 0) {  // minutes on round numbers
        ctx.fillStyle = COLORS.text; ctx.fillText(clock(c.t).slice(0, 5), x - 16, view.height - 5);
      }
    });
    var last = shown[shown.length - 1].c;  // the last price: a dashed line and a label on the axis
    ctx.setLineDash([3, 3]); ctx.strokeStyle = COLORS.last;
    ctx.beginPath(); ctx.moveTo(0, Math.round(y(last)) + 0.5); ctx.lineTo(plotWidth, Math.round(y(last)) + 0.5); ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = COLORS.last; ctx.fillRect(plotWidth + 2, y(last) - 8, AXIS - 4, 16);
    ctx.fillStyle = "#0b0e11"; ctx.fillText(fixed(last, config.price_places), plotWidth + 6, y(last) + 4);
  }

  function drawDepth() {
    var view = canvasContext($("depth-chart")), ctx = view.ctx;
    var bids = ladder(state.book.sorted("bids", DEPTH_LEVELS)), asks = ladder(state.book.sorted("asks", DEPTH_LEVELS));
    if (!bids.length && !asks.length) {
      ctx.fillStyle = COLORS.text; ctx.fillText("The book is empty.", view.width / 2 - 50, view.height / 2);
      return;
    }
    var plotHeight = view.height - 18, plotWidth = view.width;
    var prices = bids.concat(asks).map(function (l) { return Number(l.price); });
    var lowPrice = Math.min.apply(null, prices), highPrice = Math.max.apply(null, prices);
    if (bids.length && asks.length) {  // centre on the mid, as wide as the deeper side reaches
      var mid = (Number(bids[0].price) + Number(asks[0].price)) / 2;
      var half = Math.max(mid - lowPrice, highPrice - mid) * 1.1;  // the outermost levels inside the edges
      lowPrice = mid - half; highPrice = mid + half;
    }
    if (highPrice === lowPrice) { lowPrice -= 1; highPrice += 1; }
    var maxTotal = Math.max(bids.length ? bids[bids.length - 1].total : 0, asks.length ? asks[asks.length - 1].total : 0) * 1.1;
    var x = function (p) { return (p - lowPrice) / (highPrice - lowPrice) * plotWidth; };
    var y = function (total) { return plotHeight - total / maxTotal * plotHeight; };
    [[bids, COLORS.buy, "rgba(14,203,129,.18)", 0], [asks, COLORS.sell, "rgba(246,70,93,.18)", plotWidth]].forEach(function (side) {
      var levels = side[0];
      if (!levels.length) return;
      ctx.beginPath();
      ctx.moveTo(x(Number(levels[0].price)), plotHeight);
      levels.forEach(function (l, i) {  // a step: the total holds until the next level's price
        var px = x(Number(l.price));
        ctx.lineTo(px, y(i ? levels[i - 1].total : 0));
        ctx.lineTo(px, y(l.total));
      });
      ctx.lineTo(side[3], y(levels[levels.length - 1].total));
      ctx.strokeStyle = side[1]; ctx.lineWidth = 1.5; ctx.stroke();
      ctx.lineTo(side[3], plotHeight); ctx.closePath();
      ctx.fillStyle = side[2]; ctx.fill();
    });
    ctx.fillStyle = COLORS.text;
    ctx.fillText(fixed(lowPrice, config.price_places), 2, view.height - 4);
    var right = fixed(highPrice, config.price_places);
    ctx.fillText(right, plotWidth - ctx.measureText(right).width - 2, view.height - 4);
    ctx.fillText(fixed(maxTotal / 1.1, config.size_places) + " " + config.base, 2, 12);
  }

  if (window.ResizeObserver) {
    new ResizeObserver(function () { schedule("book"); schedule("candles"); })
      .observe(document.querySelector(".mk"));
  }

  // -- the signed-in holder's orders and balances: the REST API with the session (reads only),
  // read at each connect and again soon after the public streams show activity on the pair.

  function activity() { if (config.has_account) refreshPrivate(false); }

  function refreshPrivate(now) {
    if (!config.has_account) return;
    if (state.privateTimer) return;
    var wait = now ? 0 : Math.max(0, state.privateDue - Date.now());
    state.privateTimer = setTimeout(function () {
      state.privateTimer = null;
      state.privateDue = Date.now() + PRIVATE_REFRESH_MS;
      getJson("/v1/orders?status=live&limit=50&pair=" + encodeURIComponent(PAIR)).then(renderOrders).catch(function () {});
      getJson("/v1/account/balances").then(renderBalances).catch(function () {});
    }, wait);
  }

  function renderOrders(page) {
    var orders = page.results || [];
    $("open-orders").innerHTML = orders.map(function (o) {
      return '<tr data-order-id="' + o.order_id + '"><td>' + escapeHtml(new Date(o.created_at).toLocaleString("en-GB")) +
        '</td><td class="' + (o.side === "buy" ? "buy" : "sell") + '">' + escapeHtml(o.side) + "</td><td>" + escapeHtml(o.type) +
        '</td><td class="r">' + price(o.price) + '</td><td class="r">' + size(o.size) + '</td><td class="r">' + size(o.filled_size) +
        "</td><td>" + escapeHtml(o.status.replace("_", " ")) + "</td></tr>";
    }).join("") || '<tr><td colspan="7" class="mk-empty">No open orders on ' + escapeHtml(PAIR) + ".</td></tr>";
  }

  function renderBalances(body) {
    var mine = (body.balances || []).filter(function (b) {
      return b.asset === config.base || b.asset === config.quote || Number(b.spot.total) !== 0;
    });
    $("balances").innerHTML = mine.map(function (b) {
      return "<tr><td>" + escapeHtml(b.asset) + '</td><td class="r">' + escapeHtml(b.spot.available) +
        '</td><td class="r">' + escapeHtml(b.spot.locked) + "</td></tr>";
    }).join("");
  }

  $("pair-select").addEventListener("change", function (event) { location.href = event.target.value; });

  // For tests and the curious: the stream's counters, and a way to drop the socket as a network would.
  window.marketPage = {
    dropConnection: dropConnection,
    get sequence() { return state.book.sequence; },
    get reconnects() { return state.reconnects; },
    get resyncs() { return state.resyncs; },
  };

  connect();
})();
