"""Media pool job types: transcoding and audio analysis of uploaded tracks (issue 3)."""
