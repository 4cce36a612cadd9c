"""Generic calculators with MediaPipe's names and behaviour."""
