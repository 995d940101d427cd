// Summarise: an action that calls the model through the Edge's own API with
// the user's session (ctx.api: the page makes the request; a plugin frame
// has no network of its own) and adds the summary under the message.
export async function run(message, ctx) {
  const { instruction } = ctx.valves();
  const { model } = message;
  const r = await ctx.api('POST', '/v1/chat/completions', {
    model,
    messages: [{ role: 'user', content: `${instruction}\n\n${message.content}` }],
  });
  if (r.status !== 200) {
    const why = r.body && r.body.error ? r.body.error.message : `status ${r.status}`;
    throw new Error(`the model could not summarise: ${why}`);
  }
  await ctx.addNote(`Summary: ${r.body.choices[0].message.content.trim()}`);
}
