"""Pure-Python nodes shaped like a txt2img pipeline, for server tests without torch:
Pattern (a "model", seed-independent) -> Noise (a "sampler": steps, progress, previews)
-> Invert (a "decoder") -> SavePicture (writes a PNG with the prompt and workflow, like SaveImage)."""
import json
import random
import time

from PIL import Image, PngImagePlugin

from graph import Float, In, Int, Node, Out, String


class Pattern(Node):
    """A gradient picture of the given size."""
    category = "picture"
    size = Int(16, min=1, max=256)
    outputs = (Out("PICTURE", "picture"),)

    def run(self, ctx):
        img = Image.new("RGB", (self.size, self.size))
        img.putdata([(x * 255 // self.size, y * 255 // self.size, 128)
                     for y in range(self.size) for x in range(self.size)])
        return img


class Noise(Node):
    """Adds seeded noise in `steps` steps, `delay` seconds each, with progress and previews."""
    category = "picture"
    picture = In("PICTURE")
    seed = Int(0, min=0, max=2**31, control_after_generate=True)
    steps = Int(4, min=1, max=1000)
    delay = Float(0.0, min=0.0, max=5.0)
    outputs = (Out("PICTURE", "picture"),)

    def run(self, ctx):
        rng = random.Random(self.seed)
        img = self.picture.copy()
        px = img.load()
        for step in range(1, self.steps + 1):
            time.sleep(self.delay)
            x, y = rng.randrange(img.width), rng.randrange(img.height)
            px[x, y] = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
            ctx.progress(step, self.steps, preview=lambda: img.copy())
        return img


class Invert(Node):
    category = "picture"
    picture = In("PICTURE")
    outputs = (Out("PICTURE", "picture"),)

    def run(self, ctx):
        return Image.eval(self.picture, lambda v: 255 - v)


class SavePicture(Node):
    """Saves a PNG carrying tEXt `prompt` and one chunk per extra_pnginfo key, as SaveImage does."""
    category = "picture"
    output_node = True
    picture = In("PICTURE")
    filename_prefix = String("loom")

    def run(self, ctx):
        info = PngImagePlugin.PngInfo()
        info.add_text("prompt", json.dumps(ctx.prompt))
        for key, value in (ctx.extra_data.get("extra_pnginfo") or {}).items():
            info.add_text(key, json.dumps(value))
        path = ctx.env.safe_path("output", f"{self.filename_prefix}_{ctx.prompt_id}_{ctx.node_id}.png")
        self.picture.save(path, pnginfo=info)
        ctx.show(images=[{"filename": path.name, "subfolder": "", "type": "output"}])
