// stream.js: Server-Sent Events over `fetch`, because EventSource cannot send the API key
// (it takes no headers, and a key must never go in a URL). The same shape as EventSource
// for what the dashboard uses: `open`, named events (`event`, `metrics`, `lagged`) with
// `data` and `lastEventId`, `error` when the stream ends, `readyState` and `close()`. It
// does not reconnect by itself: the feed resumes from the last `seq` it received (sending
// it as `Last-Event-ID`), the charts open a new stream.

import { authorizedFetch } from './session.js';

export class EventStream {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSED = 2;

  /** Opens `url`; `lastEventId` (a `seq`) resumes after that event. */
  constructor(url, { lastEventId } = {}) {
    this.url = url;
    this.readyState = EventStream.CONNECTING;
    this.listeners = new Map();
    this.abort = new AbortController();
    this.run(lastEventId);
  }

  addEventListener(type, listener) {
    if (!this.listeners.has(type)) this.listeners.set(type, []);
    this.listeners.get(type).push(listener);
  }

  close() {
    this.readyState = EventStream.CLOSED;
    this.abort.abort();
  }

  emit(type, event = {}) {
    for (const listener of this.listeners.get(type) || []) listener(event);
  }

  async run(lastEventId) {
    const headers = { Accept: 'text/event-stream' };
    if (lastEventId) headers['Last-Event-ID'] = String(lastEventId);
    try {
      const response = await authorizedFetch(this.url, { headers, signal: this.abort.signal });
      if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
      this.readyState = EventStream.OPEN;
      this.emit('open');
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          this.dispatch(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    } catch (error) {
      if (this.abort.signal.aborted) return;
    }
    if (this.abort.signal.aborted) return;
    this.readyState = EventStream.CLOSED;
    this.emit('error');
  }

  /** One frame: `event:`, `data:` (joined by newlines), `id:`; comments are skipped. */
  dispatch(frame) {
    let type = 'message';
    const data = [];
    let id = null;
    for (const line of frame.split('\n')) {
      if (!line || line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'event') type = value;
      else if (field === 'data') data.push(value);
      else if (field === 'id') id = value;
    }
    if (data.length) this.emit(type, { data: data.join('\n'), lastEventId: id });
  }
}
