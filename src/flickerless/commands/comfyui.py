"""``flickerless comfyui COMFYUI_DIR``: add the Deflicker and Keyframes nodes to a ComfyUI install."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "comfyui",
        help="add the Deflicker and Keyframes nodes to ComfyUI (writes custom_nodes/flickerless_nodes.py)",
        description="Write custom_nodes/flickerless_nodes.py into a ComfyUI folder: one import of "
        "flickerless.comfyui, which gives ComfyUI two nodes under 'flickerless': Deflicker (a stylised batch "
        "deflickered against its original frames) and Keyframes (every frame rendered from a few stylised "
        "keyframes). Run it with the Python that runs ComfyUI, where flickerless is installed; then restart "
        "ComfyUI.",
    )
    p.add_argument("folder", help="ComfyUI's folder (the one with main.py and custom_nodes/), or its custom_nodes/")
    p.set_defaults(func=cmd_comfyui)


def cmd_comfyui(args) -> int:
    import logging
    import sys

    from ..comfyui import install

    path = install(args.folder)
    logging.getLogger("flickerless").info(
        "wrote %s: restart ComfyUI and find Deflicker and Keyframes under 'flickerless'. It imports flickerless "
        "in ComfyUI's Python: this one (%s) has it; if ComfyUI runs another, install flickerless into that one "
        "too, as into this",
        path, sys.executable)
    return 0
