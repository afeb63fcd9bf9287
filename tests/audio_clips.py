"""Clips and folders the audio and merge tests make from the real ones, in a temporary folder (never in
the repository): a clip stripped of its audio track, a clip with a track of given samples or a broken one, a DFDC
part."""
import json
import os
import subprocess
import sys

import av
import numpy as np

from conftest import ROOT


def run_script(script, *args, env=None):
    """Run one of the project's scripts as a user would; returns the CompletedProcess (text)."""
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, env=env)


def remux(src, dst, audio=None, rate=44100):
    """dst = src's video stream, copied packet by packet (not re-encoded), and no audio track where
    `audio` is None; else an AAC mono track of `audio` ((samples,) float32 in [-1, 1] at `rate`; zero
    samples gives a track without packets, which Matroska keeps and MP4 drops)."""
    with av.open(str(src)) as inp, av.open(str(dst), 'w') as out:
        vin = inp.streams.video[0]
        vout = out.add_stream_from_template(vin)
        aout = out.add_stream('aac', rate=rate, layout='mono') if audio is not None else None
        for packet in inp.demux(vin):
            if packet.dts is None:  # the demuxer's flush packet
                continue
            packet.stream = vout
            out.mux(packet)
        if aout is not None:
            chunk = 1024
            for start in range(0, len(audio), chunk):
                piece = np.ascontiguousarray(audio[None, start:start + chunk], np.float32)  # (1, n) planar
                frame = av.AudioFrame.from_ndarray(piece, format='fltp', layout='mono')
                frame.sample_rate, frame.pts = rate, start
                for p in aout.encode(frame):
                    out.mux(p)
            for p in aout.encode(None):
                out.mux(p)
    return dst


def faststart(src, dst):
    """dst = src's video and audio packets as they are, with the index (moov) first, as streaming sites write it:
    a copy cut short still opens, and its container still says how long each stream is."""
    with av.open(str(src)) as inp, av.open(str(dst), 'w', options={'movflags': 'faststart'}) as out:
        streams = inp.streams.video[0], inp.streams.audio[0]
        outs = {s.index: out.add_stream_from_template(s) for s in streams}
        for packet in inp.demux(*streams):
            if packet.dts is not None:  # not the demuxer's flush packet
                packet.stream = outs[packet.stream.index]
                out.mux(packet)
    return dst


def garble_audio(src, dst, keep=20, seed=0):
    """dst = src's video and audio packets as they are (not re-encoded), but every audio packet after the first
    `keep` replaced by random bytes of its size: the video decodes as src's, the audio track breaks at that point
    (FFmpeg's AAC decoder: 'Invalid data found')."""
    rng = np.random.default_rng(seed)
    with av.open(str(src)) as inp, av.open(str(dst), 'w') as out:
        vin, ain = inp.streams.video[0], inp.streams.audio[0]
        vout, aout = out.add_stream_from_template(vin), out.add_stream_from_template(ain)
        n_audio = 0
        for packet in inp.demux(vin, ain):
            if packet.dts is None:  # the demuxer's flush packet
                continue
            audio = packet.stream is ain
            if audio and (n_audio := n_audio + 1) > keep:
                noise = av.Packet(rng.integers(0, 256, packet.size, dtype=np.uint8).tobytes())
                noise.pts, noise.dts, noise.time_base = packet.pts, packet.dts, packet.time_base
                packet = noise
            packet.stream = aout if audio else vout
            out.mux(packet)
    return dst


def dfdc_part(folder, files, label='REAL'):
    """A DFDC part in `folder`: files {name: path to link to | bytes to write | None (listed, absent)},
    all listed in metadata.json with `label` (or {name: label} for each)."""
    os.makedirs(folder, exist_ok=True)
    for name, content in files.items():
        target = os.path.join(folder, name)
        if isinstance(content, bytes):
            with open(target, 'wb') as f:
                f.write(content)
        elif content is not None and os.path.abspath(content) != os.path.abspath(target):
            os.symlink(os.path.abspath(content), target)
    labels = label if isinstance(label, dict) else {name: label for name in files}
    meta = {name: {'label': labels[name], 'split': 'train',
                   'original': None if labels[name] == 'REAL' else 'someoriginal.mp4'} for name in files}
    with open(os.path.join(folder, 'metadata.json'), 'w') as f:
        json.dump(meta, f)
    return folder
