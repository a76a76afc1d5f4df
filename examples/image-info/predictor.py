import io

from PIL import Image, ImageStat, UnidentifiedImageError

from cortex_runtime import Response


class PythonPredictor:
    def __init__(self, config):
        self.thumbnail = int(config.get("thumbnail", 64))

    def predict(self, payload):
        # Any Content-Type other than JSON, text or a form (image/png,
        # application/octet-stream, none at all) gives the body as bytes.
        if not isinstance(payload, bytes):
            return Response({"error": "send the image as the request body"}, status=400)
        try:
            image = Image.open(io.BytesIO(payload))
            image.load()
        except (UnidentifiedImageError, OSError) as e:
            return Response({"error": f"not an image: {e}"}, status=400)
        small = image.convert("RGB")
        small.thumbnail((self.thumbnail, self.thumbnail))
        mean = [round(v) for v in ImageStat.Stat(small).mean]
        # a dict is answered as application/json
        return {"format": image.format, "width": image.width, "height": image.height,
                "mode": image.mode, "mean_rgb": mean}
