"""Audio work of the media pool: ffmpeg and ffprobe, transcoding, analysis, content sniffing."""
