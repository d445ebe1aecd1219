// Conversations, kept in this browser only (IndexedDB): {id, title, created, updated, messages}.
const DB_NAME = "homeport-chat";
const STORE = "conversations";

function open() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB_NAME, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE, { keyPath: "id" });
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function run(mode, work) {
  const db = await open();
  try {
    return await new Promise((resolve, reject) => {
      const tx = db.transaction(STORE, mode);
      const request = work(tx.objectStore(STORE));
      tx.oncomplete = () => resolve(request?.result);
      tx.onerror = () => reject(tx.error);
    });
  } finally {
    db.close();
  }
}

export const listConversations = async () =>
  ((await run("readonly", (s) => s.getAll())) || []).sort((a, b) => b.updated - a.updated);
export const getConversation = (id) => run("readonly", (s) => s.get(id));
export const saveConversation = (conversation) =>
  run("readwrite", (s) => s.put({ ...conversation, updated: Date.now() }));
export const deleteConversation = (id) => run("readwrite", (s) => s.delete(id));

export function newConversation() {
  const id = crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random().toString(16).slice(2);
  return { id, title: "New chat", created: Date.now(), updated: Date.now(), messages: [] };
}
