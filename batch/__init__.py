"""clfbatch: classify folders of images into reports, once or as a watching daemon."""
