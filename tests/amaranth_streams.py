"""Stream helpers for Amaranth's simulator: transfers one per cycle at most, with random idle
cycles (producer) or random ready drops (consumer); each returns the cycles of its transfers."""


async def feed(ctx, stream, words, *, rng=None, idle=0.0):
    """Offer ``words`` in order; once valid is asserted it stays until the transfer."""
    cycle, cycles = 0, []
    for word in words:
        while rng is not None and rng.random() < idle:
            await ctx.tick()
            cycle += 1
        ctx.set(stream.valid, 1)
        if isinstance(word, dict):
            ctx.set(stream.payload, word)
        else:   # an integer, also for a view's bits
            ctx.set(stream.payload.as_value() if hasattr(stream.payload, "as_value") else stream.payload,
                    int(word))
        while True:
            _, _, ready = await ctx.tick().sample(stream.ready)
            cycle += 1
            if ready:
                cycles.append(cycle - 1)
                break
        ctx.set(stream.valid, 0)
    return cycles


async def drain(ctx, stream, count, *, rng=None, stall=0.0):
    """Accept ``count`` words, dropping ready at random; returns (words, transfer cycles)."""
    cycle, words, cycles = 0, [], []
    while len(words) < count:
        ctx.set(stream.ready, rng is None or rng.random() >= stall)
        _, _, ready, valid, payload = await ctx.tick().sample(stream.ready, stream.valid, stream.payload)
        cycle += 1
        if ready and valid:
            words.append(payload)
            cycles.append(cycle - 1)
    ctx.set(stream.ready, 0)
    return words, cycles
