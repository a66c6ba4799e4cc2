"""PACS traffic over DICOM networking (pynetdicom): verification, study/series queries, retrieval by C-GET or
C-MOVE, and a storage SCP that receives. Qt-free; the GUI and the command line run it in workers."""
