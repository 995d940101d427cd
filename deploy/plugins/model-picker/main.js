// Model picker: a widget above the prompt box with a button per model the
// key may use (GET /v1/models); a click switches the chat's model
// (ctx.setModel), and the buttons follow a change made in the chat itself.
let buttons = [];

function mark(model) {
  for (const b of buttons) b.classList.toggle('current', b.dataset.model === model);
}

export async function mount(element, ctx) {
  const r = await ctx.api('GET', '/v1/models');
  const models = r.status === 200 && r.body && Array.isArray(r.body.data) ? r.body.data.map((m) => m.id) : [];
  buttons = models.map((id) => {
    const b = document.createElement('button');
    b.type = 'button';
    b.textContent = id;
    b.dataset.model = id;
    b.addEventListener('click', async () => {
      await ctx.setModel(id);
      mark(id);
    });
    return b;
  });
  element.replaceChildren(...buttons);
  mark(ctx.model());
  ctx.on('model-changed', (e) => mark(e.model));
  await ctx.resize(Math.max(28, document.body.scrollHeight + 2));
}
