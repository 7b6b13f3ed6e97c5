DROP TABLE tally_rejections;
