// A small PNG metadata reader: the text chunks (tEXt, iTXt, zTXt) of a PNG file, as {keyword: text}.
// ComfyUI-style images carry the editor workflow under "workflow" and the API prompt under "prompt".

const SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

async function inflate(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

function indexOfZero(bytes, from) {
  const i = bytes.indexOf(0, from);
  if (i < 0) throw new Error("malformed PNG text chunk");
  return i;
}

const latin1 = new TextDecoder("latin1");
const utf8 = new TextDecoder("utf-8");

async function readTextChunk(type, data) {
  const keyEnd = indexOfZero(data, 0);
  const key = latin1.decode(data.subarray(0, keyEnd));
  if (type === "tEXt") return [key, latin1.decode(data.subarray(keyEnd + 1))];
  if (type === "zTXt") return [key, latin1.decode(await inflate(data.subarray(keyEnd + 2)))];
  // iTXt: keyword \0 compressed-flag method language \0 translated-keyword \0 text
  const compressed = data[keyEnd + 1] === 1;
  const langEnd = indexOfZero(data, keyEnd + 3);
  const transEnd = indexOfZero(data, langEnd + 1);
  const body = data.subarray(transEnd + 1);
  return [key, utf8.decode(compressed ? await inflate(body) : body)];
}

/** Returns the text chunks of a PNG (ArrayBuffer); throws if it is not a PNG. */
export async function readPngText(buffer) {
  const bytes = new Uint8Array(buffer);
  if (bytes.length < 8 || SIGNATURE.some((b, i) => bytes[i] !== b)) throw new Error("not a PNG file");
  const view = new DataView(buffer);
  const texts = {};
  let pos = 8;
  while (pos + 8 <= bytes.length) {
    const length = view.getUint32(pos);
    const type = latin1.decode(bytes.subarray(pos + 4, pos + 8));
    const start = pos + 8;
    if (start + length > bytes.length) throw new Error(`truncated PNG chunk ${type}`);
    if (type === "tEXt" || type === "iTXt" || type === "zTXt") {
      const [key, text] = await readTextChunk(type, bytes.subarray(start, start + length));
      texts[key] = text;
    }
    if (type === "IEND") break;
    pos = start + length + 4; // skip the CRC
  }
  return texts;
}

/** The workflow a PNG carries: the editor workflow if present, else the API prompt, else null. */
export async function workflowFromPng(buffer) {
  const texts = await readPngText(buffer);
  for (const key of ["workflow", "prompt"]) {
    if (texts[key]) {
      try { return JSON.parse(texts[key]); } catch { /* try the next chunk */ }
    }
  }
  return null;
}
