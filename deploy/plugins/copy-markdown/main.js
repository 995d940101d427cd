// Copy as Markdown: an action (README "Actions and widgets"). The chat shows
// its button under each answer; run() gets the message and a ctx that asks
// the page to act for it: here, to copy the Markdown source to the
// clipboard and to say so under the message.
export async function run(message, ctx) {
  await ctx.copy(message.content);
  const words = message.content.trim().split(/\s+/).filter(Boolean).length;
  await ctx.addNote(`Copied the Markdown source (${words} words).`);
}
