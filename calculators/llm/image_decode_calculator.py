"""ImageDecodeCalculator: fetches and decodes the request's images into uint8 RGB tensors."""

from __future__ import annotations

from calculators.llm.common import LLMNodeCalculator, LLMResources, RequestContext
from calculators.llm.images import load_image
from ovgraph.errors import InvalidParameterError
from ovgraph.framework.calculator import CalculatorContext, Input, Output

TEXT_ONLY = "This servable supports only text input, but image_url has been provided"


class ImageDecodeCalculator(LLMNodeCalculator):
    """Decodes every ``image_url`` of the request into a ``[1,H,W,3]`` uint8 RGB ``ov.Tensor``.

    Data URLs and base64 always work; http(s) URLs only for ``--allowed_media_domains``; local
    paths only under ``--allowed_local_media_path``. No other layout ever reaches the pipeline.

    node {
      calculator: "ImageDecodeCalculator"
      input_stream: "REQUEST:request"
      output_stream: "REQUEST:decoded"
      node_options: {
        [type.googleapis.com/mediapipe.LLMCalculatorOptions]: { models_path: "./" }
      }
    }
    """

    IN = Input("REQUEST", RequestContext)
    OUT = Output("REQUEST", RequestContext)

    def process(self, cc: CalculatorContext) -> None:
        """Decode the images in order; the N-th becomes ``<ov_genai_image_N>``."""
        import openvino as ov

        context: RequestContext = self.IN(cc).get()
        urls = context.request.image_urls
        if urls:
            resources: LLMResources = cc.resources
            if not resources.servable.is_vlm:
                raise InvalidParameterError(TEXT_ONLY, param="messages")
            for url in urls:
                array = load_image(url, resources.image_policy)
                context.images.append(ov.Tensor(array))
                context.image_sizes.append((array.shape[1], array.shape[2]))
        self.OUT(cc).send(context)
