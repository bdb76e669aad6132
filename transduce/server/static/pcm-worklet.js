// AudioWorklet: microphone samples at the context's rate -> 16 kHz 16-bit little-endian mono PCM.
// Channels are averaged; a box filter as wide as the rate ratio low-passes before linear interpolation
// (a 48 kHz context: 3-sample box, zeros at 16 kHz). Blocks of about 100 ms are posted to the page as
// ArrayBuffers; the page's "flush" message posts what is left, then "flushed".
class Pcm16kProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.target = (options.processorOptions && options.processorOptions.targetRate) || 16000;
    this.step = sampleRate / this.target;            // input samples per output sample
    this.width = Math.max(1, Math.round(this.step)); // box filter width
    this.history = new Float32Array(0);              // input not yet consumed
    this.pos = 0;                                     // fractional input index of the next output sample
    this.out = [];
    this.block = Math.round(this.target / 10);
    this.port.onmessage = (event) => {
      if (event.data === "flush") { this.flush(); this.port.postMessage("flushed"); }
    };
  }

  process(inputs) {
    const channels = inputs[0];
    if (channels && channels.length > 0 && channels[0].length > 0) {
      const mono = new Float32Array(channels[0].length);
      for (const ch of channels) for (let i = 0; i < mono.length; i++) mono[i] += ch[i] / channels.length;
      this.push(mono);
    }
    return true;
  }

  push(samples) {
    const buf = new Float32Array(this.history.length + samples.length);
    buf.set(this.history);
    buf.set(samples, this.history.length);
    const w = this.width;
    while (this.pos + w + 1 <= buf.length) {
      const i = Math.floor(this.pos);
      const frac = this.pos - i;
      let a = 0, b = 0;
      for (let k = 0; k < w; k++) { a += buf[i + k]; b += buf[i + k + 1]; }
      const v = ((1 - frac) * a + frac * b) / w;
      this.out.push(Math.max(-32768, Math.min(32767, Math.round(v * 32767))));
      this.pos += this.step;
    }
    const used = Math.min(Math.floor(this.pos), buf.length);
    this.history = buf.slice(used);
    this.pos -= used;
    if (this.out.length >= this.block) this.flush();
  }

  flush() {
    if (this.out.length === 0) return;
    const pcm = Int16Array.from(this.out);  // little-endian on every platform browsers run on
    this.out = [];
    this.port.postMessage(pcm.buffer, [pcm.buffer]);
  }
}

registerProcessor("pcm16k", Pcm16kProcessor);
