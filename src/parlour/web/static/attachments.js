// File attachments (the uploads issue): not served yet. The composer asks `available()` for its
// attach button and drop zone, and `AttachmentList` draws a message's files; both are inert
// until the server announces uploads in its hello limits (`upload_url`), so the views need
// no change when uploads land: only this module grows (tus upload with progress).
export function available(limits) {
  return Boolean(limits && limits.upload_url);
}

export function AttachmentList() {
  return null;
}
